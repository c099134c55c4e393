"""django-instrumented stores nothing in the database; this module only carries its permissions."""

from __future__ import annotations

from django.db import models


class QueryLogControl(models.Model):
    """No table, no rows: the holder of ``instrumented.control_querylog``, the DBA panel's permission.

    Permissions belong to a model's content type, so a table-less unmanaged model gives the permission
    a home that ``manage.py migrate`` creates and the admin's user/group pages can grant.
    """

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [("control_querylog", "Can switch the MySQL proxy query log on and off")]
        verbose_name = "query log control"

    def __str__(self) -> str:
        return "query log control"


class QueryPlan(models.Model):
    """No table, no rows: the holder of ``instrumented.explain_sql``, the view page's Explain permission."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [("explain_sql", "Can see the plans (EXPLAIN) of the statements the stats show")]
        verbose_name = "query plan"

    def __str__(self) -> str:
        return "query plan"
