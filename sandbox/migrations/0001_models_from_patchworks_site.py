"""The Sandbox's models, taken over from patchworks_site with their tables (state only: no table changes)."""

import django.db.models.deletion
from django.db import migrations, models

import sandbox.models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('patchworks_site', '0008_sandbox_models_move_to_sandbox_app'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='SandboxAccount',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('account', models.CharField(default=sandbox.models._new_sandbox_account_id, editable=False, max_length=64, unique=True)),
                        ('key_hash', models.CharField(blank=True, db_index=True, editable=False, max_length=64)),
                        ('key_ciphertext', models.TextField(blank=True, editable=False)),
                        ('rotated_at', models.DateTimeField(blank=True, editable=False, null=True)),
                        ('company', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='sandbox_account', to='patchworks_site.company')),
                    ],
                    options={
                        'db_table': 'patchworks_site_sandboxaccount',
                    },
                ),
                migrations.CreateModel(
                    name='SandboxReceivedOrder',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('received_at', models.DateTimeField(db_index=True)),
                        ('account', models.CharField(blank=True, db_index=True, max_length=64)),
                        ('body', models.JSONField()),
                        ('size', models.PositiveIntegerField(default=0, help_text='Bytes of the order as JSON (for the storage bounds).')),
                    ],
                    options={
                        'db_table': 'patchworks_site_sandboxreceivedorder',
                        'ordering': ['-id'],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
