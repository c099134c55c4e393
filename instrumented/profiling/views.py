"""Profile pages: one profile (flame graph, call tree, the request's totals), its speedscope JSON, arming a view.

Only technical users (superusers, or SUPERUSER_CALLBACK) see them; everyone else gets 404, so a reference's
existence is never confirmed. Pages go through the dashboard's frame (admin look, strict CSP, private and
uncacheable); the view page shows :func:`view_section` under its stats.
"""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponseBase, HttpResponseRedirect
from django.middleware.csrf import get_token
from django.urls import reverse
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_POST, require_safe

from ..access import get_user, is_technical_user, protect
from ..conf import get_config
from ..dashboard.pages import detail_url, json_response, render_page
from ..display import local_time
from ..failopen import fail_open
from ..memcached import get_store
from . import render
from .store import MAX_ARMED, arm_profiles, arm_view, load_profile, normalize_reference, read_arms
from .tree import hot_functions, merge, speedscope


def _require_technical(request: HttpRequest) -> None:
    if not is_technical_user(request):
        raise Http404("Not found")


def _load(request: HttpRequest, ref: str) -> tuple[str, dict[str, Any] | None]:
    _require_technical(request)
    canonical = normalize_reference(ref)
    if canonical is None:
        raise Http404("Not found")
    return canonical, load_profile(canonical)


def _drawn(tree: dict[str, Any]) -> dict[str, Any]:
    return {
        "icicle": render.icicle(tree),
        "call_tree": render.call_tree(tree),
        "hot": render.rows(hot_functions(tree)),
        "total_ms": tree["nodes"][0][2] / 1000,
    }


@require_safe
def profile_page(request: HttpRequest, ref: str) -> HttpResponseBase:
    """One stored profile, with the SQL, cache and HTTP totals of its request."""
    canonical, profile = _load(request, ref)
    context: dict[str, Any] = {"title": f"Profile {canonical}", "ref": canonical, "profile": profile}
    if profile is None:
        return render_page(request, "instrumented/profiling/profile.html", context, status=404)
    context.update(
        _drawn(profile["tree"]),
        when=local_time(profile["at"]),
        json_url=reverse("instrumented:profile_json", args=[canonical]),
        view_url=detail_url(profile["view"]),
    )
    return render_page(request, "instrumented/profiling/profile.html", context)


@require_safe
def profile_json(request: HttpRequest, ref: str) -> HttpResponseBase:
    """The profile in speedscope's file format."""
    canonical, profile = _load(request, ref)
    if profile is None:
        return json_response({"error": "no such profile in the window"}, 404)
    name = f"{profile['method']} {profile['path']} ({profile['view']}) {canonical}"
    response = json_response(speedscope(profile["tree"], name))
    response["Content-Disposition"] = f'inline; filename="profile-{canonical}.speedscope.json"'
    return response


@require_POST
@csrf_protect
def arm(request: HttpRequest) -> HttpResponseBase:
    """Arm a view: its next N requests are profiled by every process (POST, CSRF, superusers only)."""
    _require_technical(request)
    view = request.POST.get("view", "")
    try:
        n = int(request.POST.get("n", "10"))
    except ValueError:
        n = 0
    if not view or len(view) > get_config().max_name_length or not 1 <= n <= MAX_ARMED:
        return json_response({"error": f"give a view name and 1 <= n <= {MAX_ARMED}"}, 400)
    user = get_user(request)
    by = str(getattr(user, "get_username", lambda: "")() or "")
    armed = arm_view(view, n, by)
    if armed is None:
        return json_response({"error": "memcached did not take the arm"}, 503)
    return protect(HttpResponseRedirect(detail_url(view) + "#instr-profiles"))


def view_section(request: HttpRequest, view: str) -> dict[str, Any] | None:
    """The view page's profiles part (technical users only): the arm form, its profiles, their merged tree."""
    if not is_technical_user(request):
        return None
    with fail_open("reading profiles failed"):
        store = get_store()
        arms = [a for a in read_arms(store) if a["view"] == view]
        section: dict[str, Any] = {
            "arm_url": reverse("instrumented:profile_arm"),
            "csrf_token": get_token(request),
            "max_armed": MAX_ARMED,
            "arm": None,
        }
        if arms:
            current = arms[-1]
            profiles = arm_profiles(current, store)
            section["arm"] = {**current, "until_text": local_time(current["until"]), "count": len(profiles)}
            section["profiles"] = [
                {**p, "url": reverse("instrumented:profile", args=[p["ref"]]), "when": local_time(p["at"])}
                for p in profiles
            ]
            if profiles:
                tree = merge([p["tree"] for p in profiles], store.config.profile_max_nodes)
                section["merged"] = _drawn(tree)
                section["processes"] = len({p["process"] for p in profiles})
        return section
    return {"error": "profiles could not be read (counted as a failure)"}
