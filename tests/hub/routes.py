"""What `LocalHubServer` answers: the Hub HTTP API as the installed `huggingface_hub` client calls it.

The endpoints and payloads mirror what `huggingface_hub` (hf_api.py, file_download.py, _commit_api.py,
_snapshot_download.py, _upload_pipeline.py), transformers' `push_to_hub`, peft's loaders and evaluate's
module loader send and read. Uploads always take the regular path: the preupload answer says
`uploadMode: "regular"` for every file, so the client sends file contents base64-encoded inside the
NDJSON commit and never starts an LFS or Xet transfer (which a test server could not serve). Unlike
the Hub, which caps regular files at 10 MB, this server accepts any size (up to a 1 GiB request).
Not served: pull requests (`create_pr=True`), tags, discussions, `.gitignore` filtering on upload.

Errors carry the Hub's `X-Error-Code` header (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`),
which is how the client tells `RepositoryNotFoundError` from `EntryNotFoundError` and so on. Anything
not listed in `ROUTES` gets a 501 whose message names the method and path, so a client upgrade that
needs a new endpoint fails with a clear message instead of a confusing 404.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import yaml  # a dependency of huggingface_hub; imports nothing of it

from .store import Commit, HubError, HubStore, Repo, file_entry, folder_entry, tree_entries

_TYPE = r"(?P<type>models|datasets|spaces)"
_REPO = r"(?P<ns>[^/]+)/(?P<name>[^/]+)"
_REV = r"(?P<rev>[^/]+)"


@dataclass
class Request:
    method: str
    params: dict[str, str]
    query: dict[str, list[str]]
    body: bytes
    headers: Message
    base_url: str  # http://host:port as the client addressed us

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except json.JSONDecodeError as err:
            raise HubError(400, f"Request body is not JSON ({err}).") from None

    def flag(self, name: str) -> bool:
        return self.query.get(name, [""])[0].lower() in ("1", "true")


@dataclass
class Response:
    status: int = 200
    payload: Any = None  # JSON-serialisable, or bytes
    headers: dict[str, str] = field(default_factory=dict)
    file: Path | None = None  # streamed from disk (resolve downloads)
    file_range: tuple[int, int] | None = None  # inclusive byte range of `file`


class HubApp:
    """Request handlers over a `HubStore`. `token`, when set, is required for every write and for private reads."""

    def __init__(self, store: HubStore, token: str | None = None):
        self.store = store
        self.token = token

    # ----------------------------------------------------------------- helpers

    def _authorized(self, req: Request) -> bool:
        return self.token is None or req.headers.get("authorization", "") == f"Bearer {self.token}"

    def _check_write(self, req: Request) -> None:
        if not self._authorized(req):
            raise HubError(401, "Invalid credentials in Authorization header")

    def _repo(self, req: Request) -> Repo:
        repo = self.store.get_repo(_singular(req.params.get("type")), f"{req.params['ns']}/{req.params['name']}")
        if repo.private and not self._authorized(req):
            raise HubError(404, f"Repository not found: {repo.repo_id}", "RepoNotFound")
        return repo

    def _repo_url(self, req: Request, repo: Repo) -> str:
        return f"{req.base_url}/{repo.url_prefix}{repo.repo_id}"

    def _info(self, repo: Repo, commit: Commit) -> dict[str, Any]:
        card = _card_data(self.store, commit)
        info: dict[str, Any] = {
            "_id": hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.namespace,
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": _as_tags(card.get("tags")) if card else [],
            "siblings": [
                {"rfilename": p, "size": self.store.blob_size(oid), "blobId": oid}
                for p, oid in sorted(commit.files.items())
            ],
            "usedStorage": sum(self.store.blob_size(oid) for oid in set(commit.files.values())),
        }
        if card:
            info["cardData"] = card
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
            if card:
                info["library_name"] = card.get("library_name")
                info["pipeline_tag"] = card.get("pipeline_tag")
        if repo.repo_type == "space":
            info["sdk"] = repo.sdk
        return info

    # ----------------------------------------------------------------- account and validation

    def whoami(self, req: Request) -> Response:
        if self.token is not None and not self._authorized(req):
            raise HubError(401, "Invalid credentials in Authorization header")
        user = self.store.user
        return Response(
            payload={
                "type": "user",
                "id": hashlib.sha1(user.encode()).hexdigest()[:24],
                "name": user,
                "fullname": "LocalHubServer user",
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "local", "role": "write"}},
            }
        )

    def validate_yaml(self, req: Request) -> Response:
        content = req.json().get("content", "")
        try:
            _front_matter(content)
        except ValueError as err:
            return Response(400, {"errors": [{"message": str(err)}], "warnings": []})
        return Response(payload={"errors": [], "warnings": []})

    # ----------------------------------------------------------------- repos

    def create_repo(self, req: Request) -> Response:
        self._check_write(req)
        body = req.json()
        repo_type = body.get("type") or "model"
        private = _is_private(body)
        namespace = body.get("organization") or self.store.user
        try:
            repo = self.store.create_repo(repo_type, namespace, str(body.get("name", "")), private, body.get("sdk"))
        except HubError as err:
            if err.status != 409:
                raise
            existing = self.store.get_repo(repo_type, f"{namespace}/{body.get('name')}")
            return Response(
                409, {"error": err.message, "url": self._repo_url(req, existing)}, {"X-Error-Message": err.message}
            )
        return Response(payload={"url": self._repo_url(req, repo), "name": repo.repo_id, "id": repo.repo_id})

    def delete_repo(self, req: Request) -> Response:
        self._check_write(req)
        body = req.json()
        namespace = body.get("organization") or self.store.user
        self.store.delete_repo(body.get("type") or "model", f"{namespace}/{body.get('name')}")
        return Response(payload={})

    def update_settings(self, req: Request) -> Response:
        self._check_write(req)
        repo = self._repo(req)
        body = req.json()
        if "private" in body or "visibility" in body:
            self.store.set_private(repo, _is_private(body))
        return Response(payload={})

    def list_repos(self, req: Request) -> Response:
        author = req.query.get("author", [None])[0]
        search = req.query.get("search", [""])[0]
        wanted_tag = req.query.get("filter", [None])[0]
        out = []
        for repo in self.store.list_repos(_singular(req.params["type"])):
            if repo.private and not self._authorized(req):
                continue
            info = self._info(repo, repo.resolve("main"))
            if (author and repo.namespace != author) or search not in repo.repo_id:
                continue
            if wanted_tag and wanted_tag not in info["tags"]:
                continue
            out.append(info)
        return Response(payload=out)

    def repo_info(self, req: Request) -> Response:
        repo = self._repo(req)
        return Response(payload=self._info(repo, repo.resolve(req.params.get("rev", "main"))))

    def refs(self, req: Request) -> Response:
        repo = self._repo(req)
        branches = [
            {"name": b, "ref": f"refs/heads/{b}", "targetCommit": oid} for b, oid in sorted(repo.branches.items())
        ]
        payload: dict[str, Any] = {"branches": branches, "converts": [], "tags": []}
        if req.flag("include_prs"):
            payload["pullRequests"] = []
        return Response(payload=payload)

    def commits(self, req: Request) -> Response:
        repo = self._repo(req)
        history = repo.history(repo.resolve(req.params["rev"]))
        return Response(
            payload=[
                {"id": c.oid, "title": c.title, "message": c.message, "authors": [{"user": c.author}], "date": c.date}
                for c in history
            ]
        )

    def branch(self, req: Request) -> Response:
        self._check_write(req)
        repo = self._repo(req)
        if req.method == "DELETE":
            self.store.delete_branch(repo, req.params["rev"])
        else:
            self.store.create_branch(repo, req.params["rev"], req.json().get("startingPoint"))
        return Response(payload={})

    # ----------------------------------------------------------------- trees

    def tree(self, req: Request) -> Response:
        repo = self._repo(req)
        commit = repo.resolve(req.params["rev"])
        entries = tree_entries(commit, self.store, req.params.get("path") or "", recursive=req.flag("recursive"))
        if req.flag("expand"):
            for entry in entries:
                entry["lastCommit"] = _last_commit(repo, commit, entry)
        return Response(payload=entries)

    def paths_info(self, req: Request) -> Response:
        repo = self._repo(req)
        commit = repo.resolve(req.params["rev"])
        # The client sends `paths` form-encoded (one `paths=` per path); accept JSON as well.
        if "json" in req.headers.get("content-type", ""):
            paths = req.json().get("paths", [])
        else:
            paths = parse_qs(req.body.decode()).get("paths", [])
        out = []
        for path in paths:
            path = path.strip("/")
            if path in commit.files:
                out.append(file_entry(commit, self.store, path))
            elif any(p.startswith(path + "/") for p in commit.files):
                out.append(folder_entry(commit, path))
        return Response(payload=out)

    # ----------------------------------------------------------------- uploads

    def preupload(self, req: Request) -> Response:
        self._check_write(req)
        repo = self._repo(req)
        if req.flag("create_pr"):
            raise HubError(501, "LocalHubServer does not support pull requests (create_pr=True).")
        head = repo.resolve(req.params["rev"])
        files = req.json().get("files", [])
        answers = [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": head.files.get(f["path"])}
            for f in files
        ]
        return Response(payload={"files": answers, "commitOid": head.oid})

    def commit(self, req: Request) -> Response:
        self._check_write(req)
        repo = self._repo(req)
        if req.flag("create_pr"):
            raise HubError(501, "LocalHubServer does not support pull requests (create_pr=True).")
        header: dict[str, Any] = {}
        operations: list[dict[str, Any]] = []
        for number, line in enumerate(req.body.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                key, value = item["key"], item["value"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise HubError(
                    400, f"Commit payload line {number} is not a {{key, value}} JSON object ({err})."
                ) from None
            if key == "header":
                header = value
            elif key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(
                        400, f"File {value.get('path')}: encoding {value.get('encoding')!r}, expected base64."
                    )
                operations.append({"key": "file", "path": value["path"], "content": base64.b64decode(value["content"])})
            elif key in ("deletedFile", "deletedFolder"):
                operations.append({"key": key, "path": value["path"]})
            elif key == "lfsFile":
                raise HubError(
                    400,
                    f"{value.get('path')}: LocalHubServer stores regular files only (its preupload answer is "
                    "'regular'), so an lfsFile operation is unexpected.",
                )
            else:
                raise HubError(400, f"Commit payload line {number}: unknown key {key!r}.")
        title = header.get("summary") or "Commit"
        commit = self.store.commit(
            repo, req.params["rev"], operations, title, header.get("description") or "", header.get("parentCommit")
        )
        return Response(
            payload={
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self._repo_url(req, repo)}/commit/{commit.oid}",
                "hookOutput": "",
                "pullRequestUrl": None,
            }
        )

    # ----------------------------------------------------------------- downloads

    def resolve(self, req: Request) -> Response:
        repo = self._repo(req)
        commit = repo.resolve(req.params["rev"])
        path = req.params["path"]
        oid = commit.files.get(path)
        if oid is None:
            raise HubError(404, f"Entry not found: {path} in {repo.repo_id}", "EntryNotFound", repo_commit=commit.oid)
        blob = self.store.blob_path(oid)
        size = blob.stat().st_size
        headers = {
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{oid}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'inline; filename="{Path(path).name}"',
        }
        byte_range = _parse_range(req.headers.get("range"), size)
        if byte_range is None:
            return Response(200, headers=headers, file=blob, file_range=(0, size - 1))
        headers["Content-Range"] = f"bytes {byte_range[0]}-{byte_range[1]}/{size}"
        return Response(206, headers=headers, file=blob, file_range=byte_range)


Handler = Callable[[HubApp, Request], Response]

ROUTES: list[tuple[frozenset[str], re.Pattern[str], Handler]] = [
    (frozenset(methods), re.compile(pattern), handler)
    for methods, pattern, handler in [
        (("POST",), r"/api/repos/create", HubApp.create_repo),
        (("DELETE",), r"/api/repos/delete", HubApp.delete_repo),
        (("GET",), r"/api/whoami-v2", HubApp.whoami),
        (("POST",), r"/api/validate-yaml", HubApp.validate_yaml),
        (("GET",), rf"/api/{_TYPE}", HubApp.list_repos),
        (("GET",), rf"/api/{_TYPE}/{_REPO}", HubApp.repo_info),
        (("PUT",), rf"/api/{_TYPE}/{_REPO}/settings", HubApp.update_settings),
        (("GET",), rf"/api/{_TYPE}/{_REPO}/revision/{_REV}", HubApp.repo_info),
        (("GET",), rf"/api/{_TYPE}/{_REPO}/tree/{_REV}(?:/(?P<path>.+))?", HubApp.tree),
        (("POST",), rf"/api/{_TYPE}/{_REPO}/paths-info/{_REV}", HubApp.paths_info),
        (("POST",), rf"/api/{_TYPE}/{_REPO}/preupload/{_REV}", HubApp.preupload),
        (("POST",), rf"/api/{_TYPE}/{_REPO}/commit/{_REV}", HubApp.commit),
        (("POST", "DELETE"), rf"/api/{_TYPE}/{_REPO}/branch/{_REV}", HubApp.branch),
        (("GET",), rf"/api/{_TYPE}/{_REPO}/refs", HubApp.refs),
        (("GET",), rf"/api/{_TYPE}/{_REPO}/commits/{_REV}", HubApp.commits),
        (("GET", "HEAD"), rf"/(?:(?P<type>datasets|spaces)/)?{_REPO}/resolve/{_REV}/(?P<path>.+)", HubApp.resolve),
    ]
]


def _is_private(body: dict[str, Any]) -> bool:
    # Current clients send `visibility`; older ones sent `private`.
    return body.get("visibility", "private" if body.get("private") else "public") == "private"


def _as_tags(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value] if isinstance(value, list) else []


def _singular(url_type: str | None) -> str:
    return {"models": "model", "datasets": "dataset", "spaces": "space", None: "model"}[url_type]


def _front_matter(content: str) -> dict[str, Any] | None:
    """The YAML metadata block at the top of a README, or None; ValueError when it is not valid YAML."""
    if not content.startswith("---"):
        return None
    end = content.find("\n---", 3)
    if end < 0:
        raise ValueError("README.md: the YAML metadata block opened with '---' is never closed.")
    try:
        data = yaml.safe_load(content[3:end])
    except yaml.YAMLError as err:
        raise ValueError(f"README.md: invalid YAML metadata ({err}).") from None
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"README.md: YAML metadata must be a mapping, got {type(data).__name__}.")
    return data or None


def _card_data(store: HubStore, commit: Commit) -> dict[str, Any] | None:
    oid = commit.files.get("README.md")
    if oid is None:
        return None
    try:
        return _front_matter(store.blob_path(oid).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None


def _last_commit(repo: Repo, commit: Commit, entry: dict[str, Any]) -> dict[str, str]:
    """The most recent commit (from `commit` back) that changed this file or folder."""

    def state(c: Commit) -> Any:
        if entry["type"] == "file":
            return c.files.get(entry["path"])
        return sorted((p, o) for p, o in c.files.items() if p.startswith(entry["path"] + "/"))

    history = repo.history(commit)
    last = history[0]
    for older in history[1:]:
        if state(older) != state(last):
            break
        last = older
    return {"id": last.oid, "title": last.title, "date": last.date}


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    if not header:
        return None
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if match is None or match.groups() == ("", ""):
        raise HubError(416, f"Unsupported Range header {header!r}; expected 'bytes=START-[END]'.")
    start_s, end_s = match.groups()
    if start_s == "":  # suffix range: last N bytes
        start, end = max(size - int(end_s), 0), size - 1
    else:
        start, end = int(start_s), min(int(end_s), size - 1) if end_s else size - 1
    if start >= size or start > end:
        raise HubError(416, f"Range {header!r} is outside the file ({size} bytes).")
    return start, end
