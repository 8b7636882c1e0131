"""Forms of the connector builder (also used to modify a prebuilt connector)."""

from __future__ import annotations

import re
from xml.etree import ElementTree

from django import forms

from connectors.editing import format_pairs, parse_pairs
from connectors.manifest import MANIFEST_LIMITS
from connectors.models import (
    AuthType,
    BodyEncoding,
    Colour,
    Direction,
    HttpMethod,
    IdempotencyKeyIn,
    PaginationStyle,
    Protocol,
    RateLimitUnit,
    SystemType,
)
from connectors.schema import (
    IDEMPOTENCY_DEFAULT,
    MAX_CONCURRENCY,
    MAX_IDEMPOTENCY_KEY_NAME,
    MAX_PAGE_SIZE,
    MAX_PAGES,
    MAX_PAIR_VALUE,
    MAX_PAIRS,
    MAX_RATE_LIMIT,
    PAGINATION_DEFAULT,
    PAGINATION_KEYS_BY_STYLE,
    PARAMETER_LOCATIONS,
    date_format_error,
    is_time_zone,
)

ICON_MAX_BYTES = 256 * 1024
ICON_TYPES = {"image/png": b"\x89PNG\r\n\x1a\n", "image/gif": b"GIF8", "image/jpeg": b"\xff\xd8\xff"}
SVG_FORBIDDEN = re.compile(
    r"<script|javascript:|<foreignObject|\son[a-z]+\s*=|<!ENTITY|<!DOCTYPE"
    r"|xlink:href\s*=\s*[\"'](?!#)|href\s*=\s*[\"'](?!#)",
    re.I,
)


def _image_size(data: bytes, content_type: str) -> tuple[int, int] | None:
    """Width and height from the image header (PNG, GIF, JPEG), without decoding the image."""
    if content_type == "image/png" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if content_type == "image/gif" and len(data) >= 10:
        return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    if content_type == "image/jpeg":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            length = int.from_bytes(data[i + 2:i + 4], "big")
            if marker in (0xC0, 0xC1, 0xC2):
                return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
            i += 2 + length
    return None


def clean_icon(upload) -> tuple[bytes, str]:
    """(bytes, content type) of an acceptable icon, or ValidationError saying why not."""
    if upload.size > ICON_MAX_BYTES:
        raise forms.ValidationError(f"The icon must be at most {ICON_MAX_BYTES // 1024} KB.")
    data = upload.read()
    name = (upload.name or "").lower()
    if name.endswith(".svg") or data.lstrip()[:5] in (b"<?xml", b"<svg "):
        text = data.decode("utf-8", errors="replace")
        if SVG_FORBIDDEN.search(text):
            raise forms.ValidationError("This SVG contains scripts, external links or entities; upload a plain SVG or a PNG.")
        try:
            root = ElementTree.fromstring(data)
        except ElementTree.ParseError:
            raise forms.ValidationError("This SVG file could not be read.") from None
        if not root.tag.endswith("svg"):
            raise forms.ValidationError("This is not an SVG image.")
        box = (root.get("viewBox") or "").replace(",", " ").split()
        width, height = (box[2], box[3]) if len(box) == 4 else (root.get("width", ""), root.get("height", ""))
        try:
            square = abs(float(re.sub(r"[a-z%]+$", "", width)) - float(re.sub(r"[a-z%]+$", "", height))) < 0.01
        except ValueError:
            square = False
        if not square:
            raise forms.ValidationError("The icon must be square (equal width and height).")
        return data, "image/svg+xml"
    for content_type, magic in ICON_TYPES.items():
        if data.startswith(magic):
            size = _image_size(data, content_type)
            if not size or size[0] != size[1] or size[0] == 0:
                raise forms.ValidationError("The icon must be square (equal width and height).")
            return data, content_type
    raise forms.ValidationError("Upload a JPG, GIF, PNG or SVG image.")


class DetailsForm(forms.Form):
    name = forms.CharField(max_length=120)
    version = forms.CharField(max_length=40, help_text="Your own version text, e.g. 1.0 or 2024-07.")
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False, max_length=5000)
    # No default: the user chooses (a preselected "Accounting" was kept by accident).
    system_type = forms.ChoiceField(
        choices=[("", "Choose a system type")] + SystemType.choices,
        error_messages={"required": "Choose the system type."},
    )
    protocol = forms.ChoiceField(choices=Protocol.choices)
    base_url = forms.CharField(
        max_length=500, label="Base URL",
        help_text="e.g. https://api.example.com/v1 — may use {{variables}} such as https://{{shop}}.example.com.",
    )
    date_format = forms.CharField(max_length=64, initial="%Y-%m-%dT%H:%M:%S%z", help_text="Default for new instances (strftime codes).")
    rate_limit_amount = forms.IntegerField(min_value=1, max_value=MAX_RATE_LIMIT, initial=60, help_text="Default for new instances.")
    rate_limit_unit = forms.ChoiceField(choices=RateLimitUnit.choices, initial=RateLimitUnit.MINUTE)
    time_zone = forms.CharField(max_length=64, initial="UTC", widget=forms.TextInput(attrs={"list": "time-zones"}))
    concurrency_limit = forms.IntegerField(
        min_value=1, max_value=MAX_CONCURRENCY, required=False,
        help_text="Optional: concurrent requests the API allows. Instances can then use connection pools.",
    )
    colour = forms.ChoiceField(choices=Colour.choices, label="Primary colour", initial="blue")
    icon = forms.FileField(
        required=False, help_text="Square JPG, GIF, PNG or SVG, at most 256 KB.",
        widget=forms.ClearableFileInput(attrs={"accept": ".jpg,.jpeg,.gif,.png,.svg"}),
    )

    def clean_time_zone(self) -> str:
        value = self.cleaned_data["time_zone"].strip()
        if not is_time_zone(value):
            raise forms.ValidationError(f'"{value}" is not a time zone, e.g. Europe/London or UTC.')
        return value

    def clean_date_format(self) -> str:
        problem = date_format_error(self.cleaned_data["date_format"])
        if problem:
            raise forms.ValidationError(f"The date format {problem}.")
        return self.cleaned_data["date_format"]

    def clean_icon(self):
        upload = self.cleaned_data.get("icon")
        return clean_icon(upload) if upload else None

    def apply_to(self, manifest: dict) -> dict:
        data = self.cleaned_data
        for key in (
            "name", "version", "description", "system_type", "protocol", "base_url",
            "date_format", "time_zone", "colour", "concurrency_limit",
        ):
            manifest[key] = data[key]
        manifest["rate_limit"] = {"amount": data["rate_limit_amount"], "unit": data["rate_limit_unit"]}
        return manifest

    @staticmethod
    def initial_from(manifest: dict) -> dict:
        return {
            **{
                k: manifest[k]
                for k in (
                    "name", "version", "description", "system_type", "protocol", "base_url",
                    "date_format", "time_zone", "colour", "concurrency_limit",
                )
            },
            "rate_limit_amount": manifest["rate_limit"]["amount"],
            "rate_limit_unit": manifest["rate_limit"]["unit"],
        }


class VariableForm(forms.Form):
    label = forms.CharField(max_length=120, label="Display name")
    key = forms.CharField(max_length=64, required=False, help_text="Used in {{placeholders}}; made from the display name when blank.")
    alias = forms.CharField(max_length=120, required=False, help_text="The name the target system uses.")
    default = forms.CharField(max_length=1024, required=False, label="Default value")
    required = forms.BooleanField(required=False)
    configurable = forms.BooleanField(required=False, initial=True)
    advanced = forms.BooleanField(required=False, help_text="For advanced users only (shown in the advanced section).")
    secret = forms.BooleanField(required=False, help_text="Stored encrypted and never shown again.")

    def as_manifest(self, key: str) -> dict:
        data = self.cleaned_data
        return {
            "key": key, "label": data["label"], "alias": data["alias"], "default": data["default"],
            "required": data["required"], "configurable": data["configurable"], "advanced": data["advanced"], "secret": data["secret"],
        }


def _pairs_field(label: str, help_text: str) -> forms.CharField:
    return forms.CharField(
        label=label, required=False, help_text=help_text,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "class": "font-monospace"}),
    )


class NewAuthMethodForm(forms.Form):
    """Shown beside the edit form of an auth method, so its ids must not clash with that form's."""

    name = forms.CharField(max_length=120)
    type = forms.ChoiceField(choices=AuthType.choices)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("auto_id", "id_new_auth_%s")
        super().__init__(*args, **kwargs)


# Methods and directions read as they do everywhere else ("GET", "receive"), not "Get".
HTTP_METHOD_CHOICES = [(value, value) for value in HttpMethod.values]
DIRECTION_CHOICES = [(value, value) for value in Direction.values]


class AuthMethodForm(forms.Form):
    name = forms.CharField(max_length=120)
    token_url = forms.CharField(max_length=500, required=False, label="Token URL", help_text="OAuth 2 only.")
    authorize_url = forms.CharField(
        max_length=500, required=False, label="Authorisation URL", help_text="OAuth 2 (authorisation code) only."
    )
    scope = forms.CharField(max_length=500, required=False)
    headers = _pairs_field("Headers", "One per line, Name: value — sent with every request, e.g. Authorization: Bearer {{api_key}}")
    query_params = _pairs_field("URL parameters", "One per line, name: value")
    body = _pairs_field("Body parameters", "One per line, name: value")
    test_method = forms.ChoiceField(choices=HTTP_METHOD_CHOICES, initial="GET", label="Test request method")
    test_path = forms.CharField(
        max_length=500, label="Test request path", help_text="A cheap request that only succeeds with valid credentials, e.g. /me"
    )
    test_expected_status = forms.CharField(
        max_length=100, initial="200", label="Expected status codes", help_text="Comma-separated, e.g. 200, 204"
    )

    def clean_test_expected_status(self) -> list[int]:
        try:
            codes = [int(part) for part in re.split(r"[,\s]+", self.cleaned_data["test_expected_status"].strip()) if part]
        except ValueError:
            raise forms.ValidationError("Write status codes as numbers, e.g. 200, 204.") from None
        if not codes or any(not 100 <= c <= 599 for c in codes):
            raise forms.ValidationError("Give at least one HTTP status code between 100 and 599.")
        return codes

    def _clean_pairs(self, name: str) -> dict[str, str]:


        try:
            return parse_pairs(self.cleaned_data[name])
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_headers(self):
        return self._clean_pairs("headers")

    def clean_query_params(self):
        return self._clean_pairs("query_params")

    def clean_body(self):
        return self._clean_pairs("body")


REQUEST_PARAMETER_RE = re.compile(
    r'^(?P<location>\S+)\s+(?P<name>[^\s="]+)\s+(?P<need>\S+)(?:\s+"(?P<label>[^"]*)")?\s*(?:=\s*(?P<default>.*))?$'
)
REQUEST_PARAMETERS_HELP = (
    'One per line: where (query, header or body), name, required or optional, an optional "label" in quotes, '
    "then = default value. {{variables}} and {{since}}, {{run_time}}, {{last_success}}, "
    "{{instance.time_zone}}, {{instance.date_format}} are allowed, e.g. "
    'query updated_since optional "Updated since" = {{since}}. Optional ones are settings of each connection shape.'
)


def parse_request_parameters(text: str) -> list[dict]:
    """The request parameters text of the endpoint form as manifest items; ValueError names the bad line."""
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = REQUEST_PARAMETER_RE.match(line.strip())
        if not match:
            raise ValueError(f'line {number}: write where, name, required or optional, then = default, e.g. query page optional = 1')
        location, need = match["location"].lower(), match["need"].lower()
        if location not in PARAMETER_LOCATIONS:
            raise ValueError(f"line {number}: where is query, header or body, not {match['location'][:40]}")
        if need not in ("required", "optional"):
            raise ValueError(f"line {number}: say required or optional, not {match['need'][:40]}")
        default = (match["default"] or "").strip()
        if len(default) > MAX_PAIR_VALUE:
            raise ValueError(f"line {number}: the default value may be at most {MAX_PAIR_VALUE} characters")
        items.append({
            "name": match["name"], "location": location, "required": need == "required",
            "default": default, "label": (match["label"] or "").strip(),
        })
    if len(items) > MAX_PAIRS:
        raise ValueError(f"at most {MAX_PAIRS} parameters (found {len(items)})")
    return items


def format_request_parameters(items: list[dict]) -> str:
    lines = []
    for p in items:
        label = f' "{p["label"]}"' if p.get("label") and p["label"] != p["name"] and '"' not in p["label"] else ""
        default = f' = {p["default"]}' if p.get("default") else ""
        lines.append(f'{p["location"]} {p["name"]} {"required" if p["required"] else "optional"}{label}{default}')
    return "\n".join(lines)


# Pagination fields of the endpoint form, named as in the manifest. The
# template shows the ones of the chosen style (all of them without JavaScript).
PAGINATION_FIELDS = tuple(name for name in PAGINATION_DEFAULT if name != "style")


class EndpointForm(forms.Form):
    name = forms.CharField(max_length=120)
    entity = forms.CharField(max_length=80, help_text="What it carries, e.g. Order or Product.")
    direction = forms.ChoiceField(choices=DIRECTION_CHOICES, help_text="receive: get data (usually GET); send: create or change data.")
    method = forms.ChoiceField(choices=HTTP_METHOD_CHOICES)
    path = forms.CharField(max_length=500, help_text="Relative to the base URL, e.g. /orders")
    parameters = _pairs_field("Fixed parameters", "Sent with every request. One per line, name: value")
    request_parameters = forms.CharField(
        label="Request parameters", required=False, help_text=REQUEST_PARAMETERS_HELP,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "class": "font-monospace"}),
    )
    body_encoding = forms.ChoiceField(
        choices=BodyEncoding.choices, initial=BodyEncoding.JSON, required=False, help_text="How a request body is sent.",
    )
    records_path = forms.CharField(
        max_length=200, required=False, label="Records path",
        help_text="Where the records are in a response, e.g. data or data.items; blank: the response is the list, or its first list.",
    )
    follow_redirects_to_other_origins = forms.BooleanField(
        required=False, label="Follow redirects to other sites",
        help_text="In runs, a redirect to another origin is followed (without credentials) and that site's answer "
        "is used. Off: the request fails, naming both origins.",
    )
    idempotency_key_in = forms.ChoiceField(
        choices=[(IdempotencyKeyIn.NONE, "not sent"), (IdempotencyKeyIn.HEADER, "in a header"),
                 (IdempotencyKeyIn.BODY, "in a body field")],
        initial=IdempotencyKeyIn.NONE, required=False, label="Idempotency key",
        help_text="Send endpoints only, as the API documents it. A run that resumes after a lost worker sends "
        "the same key again for the same batch, so an API that honours keys stores it once instead of twice.",
    )
    idempotency_key_name = forms.CharField(
        max_length=MAX_IDEMPOTENCY_KEY_NAME, required=False, label="Idempotency key name",
        help_text="The header's name (e.g. Idempotency-Key) or the JSON body field's name (e.g. idempotency_key); "
        "blank when the key is not sent.",
    )
    pagination_style = forms.ChoiceField(
        choices=PaginationStyle.choices, initial=PaginationStyle.NONE, required=False, label="Pagination",
        help_text="How the API hands out a long list a page at a time.",
    )
    next_url_path = forms.CharField(
        max_length=200, required=False, label="Next page URL path",
        help_text=(
            "Next page URL only: where the next page's URL is in a response, e.g. links.next "
            "(relative URLs are resolved against the base URL)."
        ),
    )
    page_parameter = forms.CharField(max_length=200, required=False, label="Page parameter", help_text="Page number only: e.g. page")
    first_page = forms.TypedChoiceField(
        choices=[(1, "1"), (0, "0")], coerce=int, initial=1, required=False, empty_value=1,
        label="First page number", help_text="Page number only.",
    )
    limit_parameter = forms.CharField(
        max_length=200, required=False, label="Page size parameter", help_text="Page number or limit and offset: e.g. per_page or limit",
    )
    limit = forms.IntegerField(
        min_value=0, max_value=MAX_PAGE_SIZE, required=False, label="Page size",
        help_text="Page number or limit and offset: records asked for per page (0 or blank: not sent).",
    )
    offset_parameter = forms.CharField(
        max_length=200, required=False, label="Offset parameter", help_text="Limit and offset only: e.g. offset"
    )
    cursor_path = forms.CharField(
        max_length=200, required=False, label="Next token path",
        help_text="Token / cursor only: where the next page's token is in a response, e.g. meta.next_cursor",
    )
    cursor_parameter = forms.CharField(
        max_length=200, required=False, label="Token parameter",
        help_text="Token / cursor only: the parameter the token is sent in, e.g. cursor",
    )
    max_pages = forms.IntegerField(
        min_value=0, max_value=MAX_PAGES, required=False, label="Page cap",
        help_text="At most this many pages per run (0 or blank: the platform's cap).",
    )

    def pagination_fields(self) -> list[tuple[forms.BoundField, str]]:
        """Each pagination field with the styles that use it (space-separated, for the template)."""
        return [
            (self[name], " ".join(style for style, keys in PAGINATION_KEYS_BY_STYLE.items() if name in keys))
            for name in PAGINATION_FIELDS
        ]

    def clean_parameters(self):
        try:
            return parse_pairs(self.cleaned_data["parameters"])
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_request_parameters(self):
        try:
            return parse_request_parameters(self.cleaned_data["request_parameters"])
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def pagination(self) -> dict:
        """The chosen style with its own fields; the other styles' fields keep their defaults."""
        data = self.cleaned_data
        style = data["pagination_style"] or PaginationStyle.NONE.value
        used = PAGINATION_KEYS_BY_STYLE.get(style, ())
        result = {"style": style}
        for key, default in PAGINATION_DEFAULT.items():
            if key != "style":
                value = data.get(key)
                result[key] = default if key not in used or value in (None, "") else (value.strip() if isinstance(value, str) else value)
        return result

    def as_manifest(self) -> dict:
        data = self.cleaned_data
        return {
            **{k: data[k] for k in ("name", "entity", "direction", "method", "path", "parameters", "request_parameters")},
            "body_encoding": data["body_encoding"] or BodyEncoding.JSON.value,
            "records_path": data["records_path"].strip(),
            "pagination": self.pagination(),
            "follow_redirects_to_other_origins": bool(data.get("follow_redirects_to_other_origins")),
            "idempotency": self.idempotency(),
        }

    def idempotency(self) -> dict:
        """Where the key goes; a name typed in and then "not sent" chosen is dropped with it."""
        where = self.cleaned_data.get("idempotency_key_in") or IdempotencyKeyIn.NONE.value
        name = (self.cleaned_data.get("idempotency_key_name") or "").strip()
        return {"in": where, "name": "" if where == IdempotencyKeyIn.NONE else name}

    @staticmethod
    def initial_from(endpoint: dict) -> dict:
        pagination = endpoint["pagination"]
        return {
            **{k: endpoint[k] for k in ("name", "entity", "direction", "method", "path", "body_encoding", "records_path")},
            "parameters": format_pairs(endpoint["parameters"]),
            "request_parameters": format_request_parameters(endpoint["request_parameters"]),
            "pagination_style": pagination["style"],
            **{k: pagination[k] for k in PAGINATION_FIELDS},
            "follow_redirects_to_other_origins": endpoint.get("follow_redirects_to_other_origins", False),
            "idempotency_key_in": endpoint.get("idempotency", IDEMPOTENCY_DEFAULT)["in"],
            "idempotency_key_name": endpoint.get("idempotency", IDEMPOTENCY_DEFAULT)["name"],
        }


class ManifestTextForm(forms.Form):
    manifest = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 24, "spellcheck": "false", "class": "font-monospace"}),
        max_length=MANIFEST_LIMITS.max_bytes,
    )


class UploadForm(forms.Form):
    """One uploaded file of at most `max_bytes` (checked before anything reads it)."""

    file = forms.FileField()

    def __init__(self, *args, max_bytes: int = 8 * 1024 * 1024, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_bytes = max_bytes
        self.fields["file"].help_text = f"At most {_size(max_bytes)}."

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > self.max_bytes:
            raise forms.ValidationError(f"The file must be at most {_size(self.max_bytes)} ({_size(upload.size)} uploaded).")
        return upload


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:g} MB" if n >= 1024 * 1024 else f"{n / 1024:,.0f} KB"
