"""Received orders record their reference and the Idempotency-Key they came with; the Sandbox keeps its keys.

The reference column lets the received-orders page and API count references
received more than once in the database; orders received before it get theirs
here, by the rule sandbox.data.reference_of follows (copied: a migration keeps
the rule of its day).
"""

from django.db import migrations, models


def _reference_of(body) -> str:
    if not isinstance(body, dict):
        return ""
    value = next((body[k] for k in ("reference", "number", "id") if body.get(k) not in (None, "")), "")
    return "" if isinstance(value, (dict, list)) else str(value)[:255]


def fill_references(apps, schema_editor):
    """Each stored order's reference, in batches by id (not an open cursor over the table being written)."""
    SandboxReceivedOrder = apps.get_model("sandbox", "SandboxReceivedOrder")
    last = 0
    while batch := list(SandboxReceivedOrder.objects.filter(id__gt=last).order_by("id").only("id", "body")[:500]):
        last = batch[-1].id
        for order in batch:
            order.reference = _reference_of(order.body)
        SandboxReceivedOrder.objects.bulk_update([o for o in batch if o.reference], ["reference"])

class Migration(migrations.Migration):

    dependencies = [
        ('sandbox', '0003_sandbox_api_url_follows_the_deployment'),
    ]

    operations = [
        migrations.AddField(
            model_name='sandboxreceivedorder',
            name='idempotency_key',
            field=models.CharField(blank=True, db_index=True, help_text='The Idempotency-Key of the request that stored the order (blank: sent without one).', max_length=255),
        ),
        migrations.AddField(
            model_name='sandboxreceivedorder',
            name='reference',
            field=models.CharField(blank=True, db_index=True, help_text="The order's reference (its reference, number or id, as the received-orders page shows it), kept apart so duplicates are counted by the database.", max_length=255),
        ),
        migrations.CreateModel(
            name='SandboxIdempotencyKey',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('account', models.CharField(blank=True, max_length=64)),
                ('key', models.CharField(max_length=255)),
                ('request_hash', models.CharField(help_text='SHA-256 (hex) of the request body as canonical JSON (sorted keys, no spaces).', max_length=64)),
                ('status_code', models.PositiveSmallIntegerField()),
                ('response_body', models.TextField(help_text="The first answer's body, replayed byte for byte.")),
                ('size', models.PositiveIntegerField(default=0, help_text='Bytes of the stored answer (for the storage bounds).')),
                ('created_at', models.DateTimeField(db_index=True)),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('account', 'key'), name='sandbox_idempotency_key_once_per_account')],
            },
        ),
        migrations.RunPython(fill_references, migrations.RunPython.noop),
    ]
