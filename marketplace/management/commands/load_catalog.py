from django.core.management.base import BaseCommand, CommandError

from connectors.manifest import ManifestError
from marketplace import catalog


class Command(BaseCommand):
    help = "Publish every catalog manifest (marketplace/catalog/<slug>/<version>.yaml) not yet published."

    def handle(self, *args, **options) -> None:
        try:
            published = catalog.load_catalog()
        except ManifestError as exc:
            raise CommandError("The catalog is invalid:\n  " + "\n  ".join(exc.errors)) from exc
        self.stdout.write(f"Catalog loaded: {published} new listing version(s) published.")
