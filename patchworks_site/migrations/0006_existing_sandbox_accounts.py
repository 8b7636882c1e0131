"""Each existing company gets a Sandbox account whose id is the reference its orders were stored under.

Before accounts had keys, received orders were stored under a digest of the
company id; keeping that digest as the account's public id keeps them visible.
Sizes of the stored orders are filled in for the storage bounds.
"""

import hashlib
import hmac
import json

from django.conf import settings
from django.db import migrations


def forwards(apps, schema_editor):
    Company = apps.get_model("patchworks_site", "Company")
    SandboxAccount = apps.get_model("patchworks_site", "SandboxAccount")
    SandboxReceivedOrder = apps.get_model("patchworks_site", "SandboxReceivedOrder")
    key = settings.SECRET_KEY.encode()
    for company_id in Company.objects.exclude(sandbox_account__isnull=False).values_list("pk", flat=True):
        legacy = hmac.new(key, f"sandbox-account:{company_id}".encode(), hashlib.sha256).hexdigest()[:32]
        SandboxAccount.objects.create(company_id=company_id, account=legacy)
    for order in SandboxReceivedOrder.objects.filter(size=0).only("pk", "body").iterator(chunk_size=500):
        size = len(json.dumps(order.body, ensure_ascii=False).encode())
        SandboxReceivedOrder.objects.filter(pk=order.pk).update(size=size)


class Migration(migrations.Migration):

    dependencies = [
        ("patchworks_site", "0005_sandbox_account_keys_and_order_sizes"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
