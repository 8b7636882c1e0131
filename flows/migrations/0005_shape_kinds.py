from django.db import migrations, models
import django.db.models.deletion


class Migration(migrations.Migration):
    """Connection shapes become shapes of three kinds (connection, filter, map)."""

    dependencies = [
        ("flows", "0004_runs_and_schedules"),
        ("instances", "0005_oauth"),
    ]

    operations = [
        migrations.RenameModel("ConnectionShape", "Shape"),
        migrations.AddField(
            model_name="shape",
            name="kind",
            field=models.CharField(
                choices=[("connection", "connection"), ("filter", "filter"), ("map", "map")],
                default="connection", max_length=20,
            ),
        ),
        migrations.AddField(model_name="shape", name="config", field=models.JSONField(blank=True, default=dict)),
        migrations.AlterField(
            model_name="shape",
            name="instance",
            field=models.ForeignKey(
                blank=True, null=True, on_delete=django.db.models.deletion.PROTECT,
                related_name="connection_shapes", to="instances.instance",
            ),
        ),
        migrations.AddField(
            model_name="flowrunshape", name="payload_sample", field=models.JSONField(blank=True, null=True)
        ),
    ]
