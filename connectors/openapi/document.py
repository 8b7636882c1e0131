"""Reading an uploaded OpenAPI 3 document: its bytes within limits, its version,
the shape of the parts the importer reads, `$ref`s, and its operations.

The importer reads real vendor documents leniently (unknown keys and parts it
does not use are ignored); only the parts it reads must have the right type,
checked by the pydantic models below with the manifest's error paths
(`connectors.schema.describe`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WrapValidator
from pydantic_core import PydanticCustomError

from connectors import safe_loading
from connectors.schema import MAX_ENDPOINTS, describe

MAX_BYTES = 8 * 1024 * 1024
# Real documents nest schemas a few dozen levels deep and use anchors rarely;
# aliases are counted where they are used, so an alias bomb is refused early.
LIMITS = safe_loading.Limits(
    max_bytes=MAX_BYTES, max_depth=100, max_nodes=500_000, allow_aliases=True, what="OpenAPI document"
)
MAX_OPERATIONS = 2000
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
USABLE_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}  # connectors.models.HttpMethod
MAX_SHAPE_ERRORS = 10


class OpenAPIError(ValueError):
    """The upload cannot be imported; the message is shown to the user as-is."""


# --- parsing --------------------------------------------------------------


def parse(data: bytes, filename: str = "", deadline: safe_loading.Deadline | None = None) -> dict:
    """The uploaded file as a mapping, or OpenAPIError saying why it is not an OpenAPI 3 document.

    Size, nesting depth and node count (aliases expanded) are checked before
    the document is built, and the whole read runs within `deadline`.
    """
    deadline = deadline or safe_loading.Deadline()
    if len(data) > MAX_BYTES:
        raise OpenAPIError(
            f"The file is too large ({len(data) / 1024 / 1024:.1f} MB); the limit is {MAX_BYTES // 1024 // 1024} MB."
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise OpenAPIError("The file is not UTF-8 text, so it cannot be JSON or YAML.") from None
    if not text.strip():
        raise OpenAPIError("The file is empty.")
    if "\x00" in text:
        raise OpenAPIError("The file contains NUL characters, so it is not JSON or YAML text.")
    try:
        try:
            if not text.lstrip().startswith(("{", "[")):
                raise ValueError("the text does not start with { or [")
            document = safe_loading.load_json(text, LIMITS, deadline)
        except ValueError as json_error:
            if isinstance(json_error, safe_loading.DocumentError):
                raise
            try:
                document = safe_loading.load_yaml(text, LIMITS, deadline)
            except safe_loading.DocumentError as exc:
                if exc.syntax and filename.lower().endswith(".json"):
                    raise OpenAPIError(f"The file is not valid JSON: {json_error}.") from None
                if exc.syntax:
                    where = f" (line {exc.line}, column {exc.column})" if exc.line else ""
                    detail = f": {exc.problem}" if exc.problem and not exc.line else ""
                    raise OpenAPIError(f"The file is not valid JSON or YAML{where}{detail}.") from None
                raise
    except safe_loading.DocumentError as exc:
        raise OpenAPIError(f"The file cannot be imported: {exc.describe()}.") from None
    check_version(document)
    return document


def check_version(document: Any) -> None:
    if not isinstance(document, dict):
        raise OpenAPIError("The file is not an OpenAPI document: it must hold a mapping at the top level.")
    if "swagger" in document and "openapi" not in document:
        raise OpenAPIError("Swagger 2.0 documents are not supported; convert them to OpenAPI 3 first.")
    if "openapi" not in document:
        raise OpenAPIError('The file is not an OpenAPI 3 document: it has no "openapi" field.')
    version = str(document["openapi"]).strip()[:40] if isinstance(document["openapi"], (str, int, float)) else "?"
    if not re.match(r"^3\.[01](\.|$)", version):
        raise OpenAPIError(f"OpenAPI {version} is not supported; only OpenAPI 3.0 and 3.1 documents can be imported.")



# --- the shape of the parts the importer reads ---------------------------------


def resolve(document: dict, value: Any, depth: int = 0) -> Any:
    """Follow a local `$ref` (`#/components/...`); anything else comes back unchanged."""
    while isinstance(value, dict) and isinstance(value.get("$ref"), str) and depth < 10:
        ref = value["$ref"]
        if not ref.startswith("#/"):
            return {}
        target: Any = document
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            target = target.get(part) if isinstance(target, dict) else None
        value, depth = target if target is not None else {}, depth + 1
    return value



def _through_ref(value: Any, handler: Any, info: Any) -> Any:
    """Check a part through its local `$ref`; the importer reads some parts as written too, so check both."""
    resolved = resolve(info.context["document"], value)
    if resolved is value:
        return handler(value)
    result = handler(resolved)
    if len(value) > 1:
        handler(value)
    return result


def _single_value(value: Any) -> Any:
    if isinstance(value, (list, dict)) or not isinstance(value, (str, int, float, bool, type(None))):
        raise PydanticCustomError(
            "openapi", "must be a single value, not a {kind}", {"kind": "list" if isinstance(value, list) else "mapping"}
        )
    return value


def _text_names(value: Any) -> Any:
    for name in value if isinstance(value, dict) else ():
        if not isinstance(name, str):
            raise PydanticCustomError("openapi", "names must be text (found {name})", {"name": str(name)[:40]})
    return value


def Ref(kind: Any) -> Any:
    return Annotated[kind, WrapValidator(_through_ref)]


def Names(kind: Any) -> Any:
    """A mapping from text to `kind`."""
    return Ref(Annotated[dict[str, kind], BeforeValidator(_text_names)])


Scalar = Annotated[Any, AfterValidator(_single_value), WrapValidator(_through_ref)]
Mapping = Names(Any)


class Shape(BaseModel):
    """A part of the document: only the keys the importer reads are checked (null counts as absent)."""

    model_config = ConfigDict(strict=True, extra="ignore", hide_input_in_errors=True)


class ParameterShape(Shape):
    name: Scalar = None
    in_: Scalar = Field(None, alias="in")
    required: Scalar = None


class ServerShape(Shape):
    url: Scalar = None
    variables: Mapping | None = None


Servers = Ref(list[Ref(ServerShape)])
Security = Ref(list[Mapping])
Parameters = Ref(list[Ref(ParameterShape)])


class OperationShape(Shape):
    operationId: Scalar = None  # noqa: N815 -- OpenAPI's own names
    summary: Scalar = None
    tags: Ref(list[Any]) | None = None
    parameters: Parameters | None = None
    security: Security | None = None
    servers: Servers | None = None


class PathItemShape(Shape):
    parameters: Parameters | None = None
    servers: Servers | None = None
    get: Ref(OperationShape) | None = None
    put: Ref(OperationShape) | None = None
    post: Ref(OperationShape) | None = None
    delete: Ref(OperationShape) | None = None
    patch: Ref(OperationShape) | None = None
    head: Ref(OperationShape) | None = None
    options: Ref(OperationShape) | None = None
    trace: Ref(OperationShape) | None = None


class FlowShape(Shape):
    tokenUrl: Scalar = None  # noqa: N815
    authorizationUrl: Scalar = None  # noqa: N815
    scopes: Mapping | None = None


class SecuritySchemeShape(Shape):
    type: Scalar = None
    scheme: Scalar = None
    bearerFormat: Scalar = None  # noqa: N815
    in_: Scalar = Field(None, alias="in")
    name: Scalar = None
    flows: Names(Ref(FlowShape)) | None = None


class ComponentsShape(Shape):
    securitySchemes: Names(Ref(SecuritySchemeShape)) | None = None  # noqa: N815


class DocumentShape(Shape):
    servers: Servers | None = None
    paths: Names(Ref(PathItemShape)) | None = None
    components: Ref(ComponentsShape) | None = None
    security: Security | None = None


def check_shape(document: dict) -> None:
    """OpenAPIError naming the path of each part the importer reads that has the wrong type."""
    try:
        DocumentShape.model_validate(document, context={"document": document})
    except ValidationError as exc:
        errors = describe(exc, root="document")[:MAX_SHAPE_ERRORS]
        raise OpenAPIError("The document does not have the shape of an OpenAPI document: " + "; ".join(errors) + ".") from None


# --- its operations ----------------------------------------------------------------


@dataclass
class RawOperation:
    method: str
    path: str  # as written in the document
    operation: dict
    parameters: list[dict]  # path-level and operation-level, resolved
    security: list | None  # the requirements that apply, None when the document says nothing
    servers: list  # path- or operation-level servers, empty when the document's apply


def raw_operations(document: dict, warnings: list[str], deadline: safe_loading.Deadline) -> list[RawOperation]:
    paths = document.get("paths")
    if paths is not None and not isinstance(paths, dict):
        raise OpenAPIError('The document\'s "paths" must be a mapping of paths to operations.')
    found: list[RawOperation] = []
    unusable: set[str] = set()
    global_security = document.get("security")
    for path, item in (paths or {}).items():
        deadline.check()
        item = resolve(document, item)
        if not isinstance(item, dict) or not str(path).startswith("/"):
            continue
        shared = [resolve(document, p) for p in item.get("parameters") or []]
        for method, operation in item.items():
            if method not in HTTP_METHODS or not isinstance(operation, dict):
                continue
            if method.upper() not in USABLE_METHODS:
                unusable.add(method.upper())
                continue
            own = [resolve(document, p) for p in operation.get("parameters") or []]
            # An operation's parameter overrides the path-level one with the same name and location.
            own_ids = {(p.get("name"), p.get("in")) for p in own if isinstance(p, dict)}
            parameters = [p for p in own if isinstance(p, dict)] + [
                p for p in shared if isinstance(p, dict) and (p.get("name"), p.get("in")) not in own_ids
            ]
            security = operation.get("security", global_security)
            if not isinstance(security, list):
                security = None
            servers = operation.get("servers") or item.get("servers") or []
            found.append(RawOperation(method.upper(), str(path), operation, parameters, security, servers))
            if len(found) > MAX_OPERATIONS:
                raise OpenAPIError(
                    f"The document has more than {MAX_OPERATIONS} operations; import it in parts "
                    f"(a connector can have at most {MAX_ENDPOINTS} endpoints)."
                )
    if unusable:
        warnings.append(
            f"Operations using {', '.join(sorted(unusable))} were skipped: "
            "endpoints use GET, POST, PUT, PATCH or DELETE."
        )
    if not found and unusable:
        raise OpenAPIError("The document has no operations to import: none uses GET, POST, PUT, PATCH or DELETE.")
    if not found:
        raise OpenAPIError('The document has no operations to import: its "paths" object is empty.')
    return found
