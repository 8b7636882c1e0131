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
