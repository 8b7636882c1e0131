"""One module per shape kind. A shape takes the bucket of payloads the previous shape passed on
(a list of payloads, each a list of items) and returns the bucket it passes on, recording what it
did on its FlowRunShape; it raises ShapeFailed to stop the run."""


class ShapeFailed(Exception):
    """The shape cannot go on; the message (already redacted) becomes the run's failure reason."""
