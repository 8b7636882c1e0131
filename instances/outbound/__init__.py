"""The outbound client: every request made to a third party's API on behalf of an instance."""
