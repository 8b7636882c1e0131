"""Account keys are issued on the received-orders page and kept by instances as secrets: no encrypted copy here.

The keys issued before were known only through that encrypted copy, so they are
revoked with it: an Administrator issues a new key and enters it in the
company's Sandbox instances.
"""

from django.db import migrations


def revoke_keys_known_only_encrypted(apps, schema_editor):
    SandboxAccount = apps.get_model("sandbox", "SandboxAccount")
    SandboxAccount.objects.exclude(key_ciphertext="").update(key_hash="")


class Migration(migrations.Migration):

    dependencies = [
        ('sandbox', '0001_models_from_patchworks_site'),
    ]

    operations = [
        migrations.RunPython(revoke_keys_known_only_encrypted, migrations.RunPython.noop),
        migrations.RemoveField(model_name='sandboxaccount', name='key_ciphertext'),
    ]
