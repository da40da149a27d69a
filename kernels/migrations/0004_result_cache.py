from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("kernels", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="kernelrun",
            name="cache_key",
            field=models.CharField(blank=True, db_index=True, max_length=64),
        ),
    ]
