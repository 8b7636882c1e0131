"""Import an OpenAPI 3.x document as a connector draft.

`parse()` reads the uploaded bytes, `draft_from_openapi()` turns the document
into an `ImportDraft` (base URL, variables, authentication methods, every
usable operation, and warnings about what could not be carried over) and
`to_manifest()` builds a validated manifest from the operations the user picked.

The manifest describes less than OpenAPI does, so an import is a starting
point, not a copy: request and response schemas, per-operation security,
cookie and OpenID Connect authentication and all servers but the first are
left out (and named in `warnings` where the user has to act on it). Query and
header parameters become the endpoints' request parameters; the records path,
body encoding and pagination are filled in where the document makes them clear.

- `document`: reading the bytes within limits, the shape of the parts the importer reads, `$ref`s, the operations;
- `operations`: one operation in manifest terms (entity, direction, records path, pagination, parameters);
- `draft`: what the document gives the whole connector (base URL, authentication), the draft and its manifest;
- `naming`: keys, labels and entity names made from the document's words.
"""

from connectors.openapi.document import MAX_BYTES, MAX_OPERATIONS, OpenAPIError, parse
from connectors.openapi.draft import ImportDraft, Operation, draft_from_openapi, to_manifest

__all__ = [
    "MAX_BYTES", "MAX_OPERATIONS", "ImportDraft", "OpenAPIError", "Operation", "draft_from_openapi", "parse", "to_manifest",
]
