"""Re-encrypt every instance's credentials under the newest key in CREDENTIAL_KEYS.

Rotation: add a new key at the END of CREDENTIAL_KEYS (keep the old ones), run
this command, then remove the old keys once it reports nothing left under them.
"""

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from instances import crypto
from instances.models import Instance


class Command(BaseCommand):
    help = "Re-encrypt all stored instance credentials under the newest credential key."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--generate-key", metavar="KEY_ID",
            help="Only print a new random key entry (KEY_ID:base64) to append to CREDENTIAL_KEYS.",
        )

    def handle(self, *args, generate_key: str | None = None, **options) -> None:
        if generate_key:
            self.stdout.write(crypto.new_key_entry(generate_key))
            return
        current = crypto.current_key_id()
        rotated = unchanged = 0
        with transaction.atomic():
            for instance in Instance.objects.select_for_update().exclude(secrets_ciphertext="").iterator(chunk_size=500):
                if instance.secrets_key_id == current:
                    unchanged += 1
                    continue
                try:
                    secrets = instance.get_secrets()
                except crypto.CredentialDecryptError as exc:
                    raise CommandError(
                        f'Instance {instance.pk} ("{instance.name}", company {instance.company_id}): {exc}. '
                        "Nothing was re-encrypted."
                    ) from exc
                instance.set_secrets(secrets)
                Instance.objects.filter(pk=instance.pk).update(secrets_ciphertext=instance.secrets_ciphertext)
                rotated += 1
        self.stdout.write(
            self.style.SUCCESS(f"Re-encrypted {rotated} instance(s) under key {current!r}; {unchanged} already used it.")
        )
