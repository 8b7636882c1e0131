from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from connectors.manifest import ManifestError
from marketplace import catalog


class Command(BaseCommand):
    help = "Validate a manifest file and publish it as a new version of a marketplace listing."

    def add_arguments(self, parser) -> None:
        parser.add_argument("manifest", type=Path, help="YAML manifest (may carry a top-level changelog).")
        parser.add_argument("--slug", help="Listing slug; defaults to the file's folder name.")

    def handle(self, *args, manifest: Path, slug: str | None, **options) -> None:
        if not manifest.is_file():
            raise CommandError(f"{manifest}: no such file")
        try:
            entry = catalog.read_entry(manifest, slug=slug or manifest.resolve().parent.name)
            version, created = catalog.publish(entry.slug, entry.manifest, entry.changelog)
        except ManifestError as exc:
            raise CommandError(f"{manifest} is not a valid manifest:\n  " + "\n  ".join(exc.errors)) from exc
        if created:
            self.stdout.write(self.style.SUCCESS(f"Published {version.listing.name} {version.version} ({entry.slug})."))
        else:
            self.stdout.write(f"{version.listing.name} {version.version} was already published; nothing to do.")
