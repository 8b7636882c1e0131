"""Manifest pieces the tests build connectors from."""


def basic_method(**overrides) -> dict:
    """A basic authentication method with the required username and (secret) password variables."""
    return {
        "key": "basic",
        "name": "Username and password",
        "type": "basic",
        "variables": [
            {"key": "username", "label": "Username", "required": True},
            {"key": "password", "label": "Password", "required": True, "secret": True},
        ],
        "test_request": {"path": "/me"},
        **overrides,
    }
