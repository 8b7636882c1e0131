// Small progressive enhancements; every page works without them.
document.addEventListener("htmx:responseError", showNetworkError);
document.addEventListener("htmx:sendError", showNetworkError);
document.addEventListener("htmx:beforeRequest", function () {
  var box = document.getElementById("network-error");
  if (box) box.classList.add("d-none");
});
function showNetworkError() {
  var box = document.getElementById("network-error");
  if (box) { box.classList.remove("d-none"); box.scrollIntoView({block: "nearest"}); }
}
// Plain (non-htmx) forms: show the spinner on submit and stop double submits.
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (form.hasAttribute("hx-post")) return;
  var button = form.querySelector("button[type=submit]");
  if (!button) return;
  var spinner = button.querySelector(".spinner-border");
  if (spinner) spinner.classList.remove("d-none");
  setTimeout(function () { button.disabled = true; }, 0);
});
// Behaviours declared with data attributes (the Content-Security-Policy allows no inline handlers).
// <button data-clear-field="ID">: empties the field with that id.
document.addEventListener("click", function (event) {
  var button = event.target.closest("[data-clear-field]");
  if (!button) return;
  var field = document.getElementById(button.dataset.clearField);
  if (field) { field.value = ""; field.dispatchEvent(new Event("change", {bubbles: true})); }
});
// <input data-filter-rows="SELECTOR">: hides the matching rows whose data-op text lacks the typed words.
document.addEventListener("input", function (event) {
  var input = event.target.closest("[data-filter-rows]");
  if (!input) return;
  var query = input.value.toLowerCase();
  document.querySelectorAll(input.dataset.filterRows).forEach(function (row) {
    row.hidden = Boolean(query) && row.dataset.op.indexOf(query) < 0;
  });
});
// A form marked data-busy-until-redirect stays disabled, its progress shown,
// from a successful answer (HX-Redirect) until the next page has loaded.
document.addEventListener("htmx:afterRequest", function (event) {
  var form = event.detail.elt;
  var xhr = event.detail.xhr;
  if (!form.hasAttribute || !form.hasAttribute("data-busy-until-redirect")) return;
  if (!event.detail.successful || !xhr || !xhr.getResponseHeader("HX-Redirect")) return;
  setTimeout(function () {
    form.classList.add("htmx-request");
    form.querySelectorAll("button[type=submit]").forEach(function (button) { button.disabled = true; });
  }, 0);
});
// <button data-copy-field="ID">: copies that field's value to the clipboard.
document.addEventListener("click", function (event) {
  var button = event.target.closest("[data-copy-field]");
  if (!button) return;
  var field = document.getElementById(button.dataset.copyField);
  if (!field) return;
  field.select();
  if (navigator.clipboard) navigator.clipboard.writeText(field.value).catch(function () { document.execCommand("copy"); });
  else document.execCommand("copy");
  button.setAttribute("title", "Copied");
});

// <fieldset data-pagination>: shows only the fields of the chosen pagination style
// (each wrapped in <div data-pagination-styles="style style">). Without JavaScript all show.
function showPaginationFields(fieldset) {
  var select = fieldset.querySelector("select");
  if (!select) return;
  fieldset.querySelectorAll("[data-pagination-styles]").forEach(function (wrapper) {
    var styles = wrapper.getAttribute("data-pagination-styles").split(" ");
    var invalid = wrapper.querySelector(".is-invalid");
    wrapper.hidden = !invalid && styles.indexOf(select.value) === -1;
  });
}
document.addEventListener("change", function (event) {
  var fieldset = event.target.closest("[data-pagination]");
  if (fieldset) showPaginationFields(fieldset);
});
function initPaginationFields() {
  document.querySelectorAll("[data-pagination]").forEach(showPaginationFields);
}
if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", initPaginationFields);
else initPaginationFields();
document.addEventListener("htmx:afterSwap", initPaginationFields);
// After a shape moved (htmx swaps the list), keep the keyboard focus on the button
// that moved it, or on its other arrow when the shape reached the top or bottom.
// After settling: htmx enables the new list's forms then, so the next key press is handled by htmx.
document.addEventListener("htmx:afterSettle", function () {
  var list = document.querySelector("#shape-list[data-focus]");
  if (!list) return;
  var key = list.dataset.focus;
  list.removeAttribute("data-focus");
  var button = list.querySelector('[data-focus-key="' + key + '"]');
  if (button && button.disabled) {
    var other = key.replace(/-(up|down)$/, function (m, d) { return d === "up" ? "-down" : "-up"; });
    button = list.querySelector('[data-focus-key="' + other + '"]');
  }
  if (button) button.focus();
});
// A shape's settings swapped into the panel on the flow page: move focus to its heading
// (or to the first field with an error), so keyboard and screen reader users land there.
// After settling: until then htmx keeps the old attributes (classes) of elements whose id stays.
document.addEventListener("htmx:afterSettle", function (event) {
  var panel = event.detail.target;
  if (!panel || panel.id !== "shape-panel") return;
  var target = panel.querySelector(".is-invalid") || panel.querySelector("h2");
  if (target) { target.focus(); target.scrollIntoView({block: "nearest"}); }
});
