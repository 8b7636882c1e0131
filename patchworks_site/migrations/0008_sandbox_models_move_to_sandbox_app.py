"""The Sandbox's models moved to the sandbox app: forgotten here (state only); their tables stay as they are."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('patchworks_site', '0007_company_max_run_duration'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name='SandboxAccount'),
                migrations.DeleteModel(name='SandboxReceivedOrder'),
            ],
            database_operations=[],
        ),
    ]
