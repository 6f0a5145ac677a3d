"""The review and approval web pages: overview, candidates, approvals, rollouts, audit log.

Templates and assets live in ``dashboards/``. A reader signs in with the same API token as
the API (``flywheel users add``); the page keeps a signed, HttpOnly, SameSite=Lax session
cookie (Secure in production and over HTTPS) that names the user and the token it was opened
with, so issuing a new token ends old sessions. Every form post carries a CSRF nonce: the
session's, or before sign-in the login form's own (in a cookie of its own), so another site
can neither act in a reader's name nor sign a reader in as someone else. Pages call the same
service functions as the API; the role checks are theirs, so an engineer's approval is
refused here exactly as there.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from itsdangerous import BadSignature, URLSafeTimedSerializer

from services.api import charts
from services.api.deps import CandidateRef, SessionDep, SettingsDep, WriteSessionDep
from services.api.errors import STATUS
from services.api.lockout import LockedOut, lockout_keys, lockout_of
from services.approval import decisions
from services.approval.decisions import APPROVER_ROLES
from services.approval.users import Unauthenticated, article, authenticate
from services.config import Settings, get_settings
from services.errors import NotFound
from services.evaluation.trajectories import FILMED_FAILURES, VIDEO_FPS
from services.readmodel import episodes, evidence, review
from services.readmodel.rollouts import rollouts_overview
from services.registry.ledger import champion_of
from services.rollout import controller
from services.rollout.plan import RolloutPlan
from services.shadow.judging import candidate_shadow
from services.store.models import User, utcnow

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
templates = Jinja2Templates(directory=DASHBOARDS / "templates")
PLOTLY_JS = Path(charts.go.__file__).resolve().parents[1] / "package_data" / "plotly.min.js"

COOKIE = "flywheel_session"
SESSION_HOURS = 12
# The login form's CSRF nonce, until the session cookie (with a nonce of its own) replaces it.
LOGIN_COOKIE = "flywheel_login"
LOGIN_FORM_HOURS = 1
# Failing evaluation episodes whose trajectories the candidate page plots (all are listed):
# those the evaluation films.
PLOTTED_FAILURES = FILMED_FAILURES
# Rows of the episode browser's table (the page says how many match in all).
LISTED_EPISODES = 200


@dataclass(frozen=True)
class Viewer:
    """The signed-in reader of a page."""

    name: str
    role: str
    csrf: str

    @property
    def can_approve(self) -> bool:
        return self.role in APPROVER_ROLES


class LoginRequired(Exception):
    """No valid session cookie: the reader is sent to the login form."""


def _signer(settings: Settings, salt: str = "flywheel-pages") -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings.secret_key.get_secret_value(), salt=salt)


def _cookie_options(request: Request, settings: Settings) -> dict[str, Any]:
    # Secure in production whatever the scheme this process sees: TLS usually ends at a
    # proxy in front of it. Lax, not Strict: a link to a candidate (from a notification)
    # opens the page signed in; no GET changes anything, and every POST checks a nonce.
    secure = settings.mode == "production" or request.url.scheme == "https"
    return {"httponly": True, "samesite": "lax", "secure": secure}


def _viewer(request: Request, session: SessionDep, settings: SettingsDep) -> Viewer:
    try:
        data = _signer(settings).loads(
            request.cookies.get(COOKIE, ""), max_age=SESSION_HOURS * 3600
        )
    except BadSignature as exc:
        raise LoginRequired from exc
    user = session.get(User, data.get("user", ""))
    if user is None or user.token_hash is None or user.token_hash[:16] != data.get("token"):
        raise LoginRequired  # the user is gone or has a new token since
    return Viewer(name=user.name, role=user.role, csrf=data["csrf"])


ViewerDep = Annotated[Viewer, Depends(_viewer)]


def _checked(viewer: ViewerDep, csrf: Annotated[str, Form()] = "") -> Viewer:
    """The viewer of a form post, which must carry the session's CSRF nonce."""
    if not hmac.compare_digest(csrf, viewer.csrf):
        raise LoginRequired
    return viewer


PosterDep = Annotated[Viewer, Depends(_checked)]
ReasonField = Annotated[str, Form(max_length=2000)]

router = APIRouter(include_in_schema=False)


def _page(request: Request, name: str, viewer: Viewer | None, status: int = 200, **context):
    return templates.TemplateResponse(
        request, name, {"viewer": viewer, **context}, status_code=status
    )


@router.get("/", response_class=RedirectResponse)
def root() -> RedirectResponse:
    return RedirectResponse("/ui", status_code=303)


@router.get("/vendor/plotly.min.js")
def plotly_js() -> FileResponse:
    """plotly.js from the installed plotly package: the pages work with no internet."""
    return FileResponse(PLOTLY_JS, media_type="text/javascript")


@router.get("/ui/login", response_class=HTMLResponse)
def login_form(request: Request, settings: SettingsDep, next: str = "/ui") -> Response:
    return _login_page(request, settings, next=_local(next))


def _login_page(request: Request, settings: Settings, status: int = 200, **context) -> Response:
    """The login form with a fresh CSRF nonce, kept signed in a cookie for the post to match."""
    nonce = secrets.token_urlsafe(16)
    page = _page(request, "login.html", None, status, csrf=nonce, **context)
    page.set_cookie(
        LOGIN_COOKIE,
        _signer(settings, "flywheel-login").dumps(nonce),
        max_age=LOGIN_FORM_HOURS * 3600,
        path="/ui/login",
        **_cookie_options(request, settings),
    )
    return page


def _login_nonce(request: Request, settings: Settings) -> str | None:
    try:
        return _signer(settings, "flywheel-login").loads(
            request.cookies.get(LOGIN_COOKIE, ""), max_age=LOGIN_FORM_HOURS * 3600
        )
    except BadSignature:
        return None


@router.post("/ui/login")
def login(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    token: Annotated[str, Form(max_length=200)],
    next: Annotated[str, Form()] = "/ui",
    csrf: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    nonce = _login_nonce(request, settings)
    if nonce is None or not hmac.compare_digest(csrf, nonce):
        error = "the sign-in form expired or came from another site: sign in again"
        return _login_page(request, settings, 403, next=_local(next), error=error)
    lockout, keys = lockout_of(request), lockout_keys(request)
    try:
        lockout.check(keys)
    except LockedOut as exc:
        page = _login_page(request, settings, 429, next=_local(next), error=str(exc))
        page.headers["Retry-After"] = str(exc.retry_after_s)
        return page
    try:
        user = authenticate(session=session, token=token.strip())
    except Unauthenticated as exc:
        lockout.record_failure(keys)
        return _login_page(request, settings, 401, next=_local(next), error=str(exc))
    lockout.record_success(keys)
    value = {"user": user.name, "token": user.token_hash[:16], "csrf": secrets.token_urlsafe(16)}
    response = RedirectResponse(_local(next), status_code=303)
    options = _cookie_options(request, settings)
    response.set_cookie(
        COOKIE, _signer(settings).dumps(value), max_age=SESSION_HOURS * 3600, **options
    )
    response.delete_cookie(LOGIN_COOKIE, path="/ui/login", **options)
    return response


@router.post("/ui/logout")
def logout(request: Request, viewer: PosterDep, settings: SettingsDep) -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, **_cookie_options(request, settings))
    return response


@router.get("/ui", response_class=HTMLResponse)
def overview(request: Request, viewer: ViewerDep, session: SessionDep, settings: SettingsDep):
    nights = evidence.nights_history(settings, session)
    history = evidence.champion_history(session)
    evaluated = [{**n["evaluation"], "night": n["night"]} for n in nights if n.get("evaluation")]
    figures = {
        "fleet-success": charts.fleet_success(nights),
        "interventions": charts.fleet_interventions(nights),
        "evaluations": charts.learning_curve(evaluated),
        "champions": charts.champion_timeline(history),
    }
    return _page(
        request,
        "overview.html",
        viewer,
        nights=nights,
        history=history,
        champion=champion_of(session=session),
        figures={k: charts.to_json(f) for k, f in figures.items()},
    )


@router.get("/ui/candidates", response_class=HTMLResponse)
def candidates(request: Request, viewer: ViewerDep, session: SessionDep):
    rows = list(reversed(review.candidate_summaries(session)))
    return _page(request, "candidates.html", viewer, candidates=rows)


@router.get("/ui/candidates/{ref}", response_class=HTMLResponse)
def candidate(
    request: Request,
    ref: CandidateRef,
    viewer: ViewerDep,
    session: SessionDep,
    settings: SettingsDep,
):
    try:
        detail = review.candidate_detail(session, ref)
    except NotFound as exc:
        return _page(request, "error.html", viewer, 404, message=str(exc))
    figures = {
        "tasks": charts.task_success(detail["tasks"]),
        "curve": charts.learning_curve(
            evidence.learning_curve(session, ref), highlight=detail["model_version"]
        ),
    }
    failures = []
    for failure in detail["failing_episodes"]:
        if len(failures) == PLOTTED_FAILURES:
            break
        pair = review.evaluation_episode(session, settings, ref, failure["task"], failure["seed"])
        episode = pair["candidate"]
        if episode["trajectory"] is not None:  # older evaluations kept no trajectories
            key = f"eval-{failure['task']}-{failure['seed']}"
            figures[key] = charts.trajectory(
                episode["trajectory"]["states"],
                episode["trajectory"]["actions"],
                title=f"{failure['task']}, seed {failure['seed']}: policy in control throughout",
            )
            videos = {
                side: f"/ui/candidates/{quote(detail['id'])}/episodes/{quote(failure['task'])}"
                f"/{failure['seed']}/{side}.mp4"
                for side in ("candidate", "champion")
                if pair[side] is not None and pair[side]["video"]
            }
            failures.append(
                {
                    **failure,
                    "figure": key,
                    "videos": videos,
                    "sides": {s: pair[s] and pair[s]["steps"] for s in ("candidate", "champion")},
                }
            )
    fleet = []
    for episode in evidence.dataset_fleet_episodes(settings, session, detail["dataset_id"]):
        key = f"fleet-{episode['id']}"
        figures[key] = charts.trajectory(
            episode["states"],
            episode["actions"],
            title=f"{episode['robot_id']} on v{episode['policy_version']}, {episode['task']}: "
            f"{episode['outcome']}, {episode['interventions']} intervention(s)",
            operator_spans=episode["operator_spans"],
        )
        fleet.append({**episode, "figure": key})
    return _page(
        request,
        "candidate.html",
        viewer,
        c=detail,
        plotted_failures=failures,
        fleet_episodes=fleet,
        links=_links(detail),
        fps=VIDEO_FPS,
        figures={k: charts.to_json(f) for k, f in figures.items()},
        awaiting=_awaiting(detail["status"], detail["decisions"]),
        shadow=candidate_shadow(settings, detail["id"]),
    )


@router.post("/ui/candidates/{ref}/{verdict}")
def decide(
    request: Request,
    ref: CandidateRef,
    verdict: str,
    viewer: PosterDep,
    session: WriteSessionDep,
    reason: ReasonField = "",
) -> Response:
    """Approve, reject or comment; the service refuses a role that may not."""
    user = session.get(User, viewer.name)
    if verdict in ("approve", "reject"):
        act = partial(getattr(decisions, verdict), reason=reason)
    elif verdict == "comment":
        act = partial(decisions.comment, text=reason)
    else:
        return _page(request, "error.html", viewer, 404, message=f"no action {verdict!r}")
    return _act(
        request,
        viewer,
        session,
        partial(act, session=session, candidate_id=ref, user=user),
        f"/ui/candidates/{quote(ref)}",
    )


@router.get("/ui/candidates/{ref}/episodes/{task}/{seed}/{side}.mp4")
def evaluation_video(
    ref: CandidateRef,
    task: str,
    seed: int,
    side: str,
    viewer: ViewerDep,
    session: SessionDep,
    settings: SettingsDep,
) -> Response:
    """The video of a candidate's (or its champion's) evaluation episode, recorded when the
    candidate failed it."""
    try:
        path = review.evaluation_video(session, settings, ref, task, seed, side)
    except NotFound as exc:
        return Response(str(exc), status_code=404, media_type="text/plain")
    return FileResponse(path, media_type="video/mp4")


@router.get("/ui/episodes", response_class=HTMLResponse)
def episode_browser(
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    robot: str = "",
    task: str = "",
    outcome: str = "",
    status: str = "",
):
    chosen = {"robot_id": robot, "task": task, "outcome": outcome, "status": status}
    rows, total = episodes.episode_list(session, limit=LISTED_EPISODES, **chosen)
    return _page(
        request,
        "episodes.html",
        viewer,
        rows=rows,
        total=total,
        options=episodes.episode_filters(session),
        chosen=chosen,
    )


@router.get("/ui/episodes/{episode_id}", response_class=HTMLResponse)
def episode_page(
    request: Request, episode_id: str, viewer: ViewerDep, session: SessionDep, settings: SettingsDep
):
    try:
        detail = episodes.episode_detail(settings, session, episode_id)
    except NotFound as exc:
        return _page(request, "error.html", viewer, 404, message=str(exc))
    figures = {}
    if detail["states"] is not None:
        figures["steps"] = charts.to_json(
            charts.trajectory(
                detail["states"],
                detail["actions"],
                title="state and action per step",
                operator_spans=detail["operator_spans"],
            )
        )
    return _page(request, "episode.html", viewer, e=detail, figures=figures)


@router.get("/ui/episodes/{episode_id}/cameras/{name}.mp4")
def episode_camera(
    episode_id: str, name: str, viewer: ViewerDep, session: SessionDep, settings: SettingsDep
) -> Response:
    """One camera of one stored episode as an MP4 of its own (cut from the packed file)."""
    try:
        path = episodes.camera_clip(settings, session, episode_id, name)
    except NotFound as exc:
        return Response(str(exc), status_code=404, media_type="text/plain")
    return FileResponse(path, media_type="video/mp4")


@router.get("/ui/approvals", response_class=HTMLResponse)
def approvals(request: Request, viewer: ViewerDep, session: SessionDep):
    rows = list(reversed(review.candidate_summaries(session)))
    waiting = [
        c for c in rows if c["approval"] is None and c["status"] in ("passed", "inconclusive")
    ]
    decided = [c for c in rows if c["approval"] is not None]
    return _page(request, "approvals.html", viewer, waiting=waiting, decided=decided)


@router.get("/ui/rollouts", response_class=HTMLResponse)
def rollouts(request: Request, viewer: ViewerDep, session: SessionDep, settings: SettingsDep):
    return _page(request, "rollouts.html", viewer, **_rollouts(session, settings))


@router.get("/ui/rollouts/live", response_class=HTMLResponse)
def rollouts_live(request: Request, viewer: ViewerDep, session: SessionDep, settings: SettingsDep):
    """The rollouts page's live part, which the page fetches again every few seconds."""
    return _page(request, "_rollouts.html", viewer, **_rollouts(session, settings))


@router.post("/ui/rollouts/{action}")
def rollout_action(
    request: Request,
    action: str,
    viewer: PosterDep,
    session: SessionDep,
    settings: SettingsDep,
    reason: ReasonField = "",
) -> Response:
    act = {"halt": controller.halt_rollout, "rollback": controller.rollback}.get(action)
    if act is None:
        return _page(request, "error.html", viewer, 404, message=f"no action {action!r}")
    if not viewer.can_approve:  # the controller trusts its callers; the API checks the same
        return _page(
            request,
            "error.html",
            viewer,
            403,
            message=f"{viewer.name} is {article(viewer.role)}: only a fleet manager may {action}",
        )
    return _act(
        request,
        viewer,
        session,
        partial(act, settings, actor=viewer.name, reason=reason),
        "/ui/rollouts",
    )


@router.get("/ui/audit", response_class=HTMLResponse)
def audit(request: Request, viewer: ViewerDep, session: SessionDep, subject: str | None = None):
    rows = review.audit_log(session, subject_id=subject or None, limit=500)
    return _page(request, "audit.html", viewer, rows=rows, subject=subject)


def install(app: FastAPI) -> None:
    """Add the pages, their static files, and the redirect to the login form."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=DASHBOARDS / "static"), name="static")

    async def to_login(request: Request, exc: LoginRequired) -> Response:
        target = request.url.path if request.method == "GET" else "/ui"
        return RedirectResponse(f"/ui/login?next={quote(target)}", status_code=303)

    app.add_exception_handler(LoginRequired, to_login)


def _act(request: Request, viewer: Viewer, session, act, back: str) -> Response:
    """Run a state change; on a refusal, show why with the status the API would answer."""
    try:
        act()
    except (*STATUS, ValueError) as exc:
        session.rollback()
        status = next((s for t, s in STATUS.items() if isinstance(exc, t)), 400)
        return _page(request, "error.html", viewer, status, message=str(exc), back=back)
    return RedirectResponse(back, status_code=303)


def _rollouts(session, settings: Settings) -> dict[str, Any]:
    overview = rollouts_overview(session)
    thresholds = RolloutPlan.from_settings(settings).thresholds()
    figures = {
        r["id"]: charts.to_json(charts.rollout_watch(r, thresholds))
        for r in overview["rollouts"][:3]
        if any(s["windows"] for s in r["stages"])
    }
    return {**overview, "rollout_figures": figures, "now": utcnow().strftime("%H:%M:%S UTC")}


def _awaiting(status: str, decided: list[dict]) -> bool:
    return status in ("passed", "inconclusive") and not any(
        d["kind"] == "approval" for d in decided
    )


def _links(detail: dict) -> dict[str, str]:
    links = get_settings().links
    out = {}
    if links.mlflow_ui_url and detail["mlflow_run_id"]:
        out["mlflow"] = f"{links.mlflow_ui_url.rstrip('/')}/#/runs/{detail['mlflow_run_id']}"
    if links.prefect_ui_url and detail["flow_run_id"]:
        out["prefect"] = f"{links.prefect_ui_url.rstrip('/')}/runs/flow-run/{detail['flow_run_id']}"
    return out


def _local(target: str) -> str:
    """Only a path on this site may follow a login (no open redirect)."""
    return target if target.startswith("/") and not target.startswith("//") else "/ui"
