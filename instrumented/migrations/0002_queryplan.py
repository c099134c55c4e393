# The holder of instrumented.explain_sql (issue 22): an unmanaged model, no table.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("instrumented", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="QueryPlan",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
            ],
            options={
                "verbose_name": "query plan",
                "permissions": [("explain_sql", "Can see the plans (EXPLAIN) of the statements the stats show")],
                "managed": False,
                "default_permissions": (),
            },
        ),
    ]
