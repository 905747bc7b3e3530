"""The storage behind `LocalHubServer`: repos, branches and commits of a Hub, kept in one folder.

The test server needs just enough of a git-backed Hub for the real `huggingface_hub` client to
upload and download: content-addressed blobs, commits that snapshot a whole file tree, branches that
point at commits. Object ids are computed the way the client expects them (a blob's id is its
git-sha1, as `huggingface_hub.utils.sha.git_hash` computes it, so the client's "file unchanged"
detection works), and commit ids are 40 hex digits so the client treats them as immutable revisions.

Blobs live under `<root>/blobs/`, each repo's metadata in `<root>/repos/<type>s/<namespace>/<name>.json`
(written atomically after each change), so a server restarted on the same folder sees the same repos.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_TYPES = ("model", "dataset", "space")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_FULL_OID = re.compile(r"^[0-9a-f]{40}$")
# The Hub seeds every repo with a `.gitattributes`; this server stores all files as regular git blobs.
INITIAL_GITATTRIBUTES = b"# LocalHubServer: every file is stored as a regular git blob (no LFS, no Xet).\n"


class HubError(Exception):
    """An error the server answers with `status`, and `code` in `X-Error-Code` (as the Hub does)."""

    def __init__(self, status: int, message: str, code: str | None = None, repo_commit: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.repo_commit = repo_commit


def git_blob_oid(data: bytes) -> str:
    """Git's object id of a file (`git hash-object`), the id the Hub reports as a file's `oid`."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def utc_now() -> str:
    """A timestamp in the one format `huggingface_hub.utils.parse_datetime` reads."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def check_repo_name(namespace: str, name: str) -> None:
    for part in (namespace, name):
        if not _NAME.match(part) or ".." in part or "--" in part:
            raise HubError(400, f"Invalid repo name {namespace}/{name!s}: {part!r} is not a valid name part.")


def check_path(path: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise HubError(400, f"Invalid path in repo: {path!r}.")
    return path


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    date: str
    author: str
    files: dict[str, str]  # path -> blob oid


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    sdk: str | None = None
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/")[0]

    @property
    def url_prefix(self) -> str:
        return "" if self.repo_type == "model" else f"{self.repo_type}s/"

    def resolve(self, revision: str) -> Commit:
        """The commit a branch name or a (full or abbreviated) commit id points to."""
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        if re.fullmatch(r"[0-9a-f]{7,40}", revision):
            found = [c for oid, c in self.commits.items() if oid.startswith(revision)]
            if len(found) == 1:
                return found[0]
        raise HubError(404, f"Invalid rev id: {revision} in {self.repo_type} repo {self.repo_id}", "RevisionNotFound")

    def history(self, commit: Commit) -> list[Commit]:
        out = [commit]
        while out[-1].parent is not None:
            out.append(self.commits[out[-1].parent])
        return out


class HubStore:
    """Repos of a local Hub; every public method is thread-safe (one lock for the whole store)."""

    def __init__(self, root: str | os.PathLike, user: str = "user"):
        self.root = Path(root)
        self.user = user
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], Repo] = {}
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self._load()

    # ----------------------------------------------------------------- persistence

    def _repo_file(self, repo: Repo) -> Path:
        return self.root / "repos" / f"{repo.repo_type}s" / f"{repo.repo_id}.json"

    def _save(self, repo: Repo) -> None:
        path = self._repo_file(repo)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, json.dumps(asdict(repo), indent=1).encode())

    def _load(self) -> None:
        for path in sorted((self.root / "repos").glob("*/*/*.json")):
            data = json.loads(path.read_text())
            data["commits"] = {oid: Commit(**c) for oid, c in data["commits"].items()}
            repo = Repo(**data)
            self.repos[(repo.repo_type, repo.repo_id)] = repo

    def put_blob(self, data: bytes) -> str:
        oid = git_blob_oid(data)
        path = self.blob_path(oid)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(path, data)
        return oid

    def blob_path(self, oid: str) -> Path:
        return self.root / "blobs" / oid[:2] / oid

    def blob_size(self, oid: str) -> int:
        return self.blob_path(oid).stat().st_size

    # ----------------------------------------------------------------- repos

    def create_repo(self, repo_type: str, namespace: str, name: str, private: bool, sdk: str | None) -> Repo:
        """Create a repo with the Hub's initial commit (a `.gitattributes`); 409 when it exists."""
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"Invalid repo type {repo_type!r}; expected one of {', '.join(REPO_TYPES)}.")
        check_repo_name(namespace, name)
        repo_id = f"{namespace}/{name}"
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                raise HubError(409, f"You already created this {repo_type} repo: {repo_id}")
            repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=utc_now(), sdk=sdk)
            files = {".gitattributes": self.put_blob(INITIAL_GITATTRIBUTES)}
            self._add_commit(repo, "main", None, files, "initial commit", "", author="system")
            self.repos[(repo_type, repo_id)] = repo
            self._save(repo)
            return repo

    def delete_repo(self, repo_type: str, repo_id: str) -> None:
        with self.lock:
            repo = self.get_repo(repo_type, repo_id)
            del self.repos[(repo_type, repo_id)]
            self._repo_file(repo).unlink(missing_ok=True)

    def clear(self) -> None:
        """Delete every repo (blobs stay: they are content-addressed, so a later repo may share them)."""
        with self.lock:
            for repo in self.repos.values():
                self._repo_file(repo).unlink(missing_ok=True)
            self.repos.clear()

    def set_private(self, repo: Repo, private: bool) -> None:
        with self.lock:
            repo.private = private
            self._save(repo)

    def get_repo(self, repo_type: str, repo_id: str) -> Repo:
        with self.lock:
            repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository not found: {repo_type} {repo_id}", "RepoNotFound")
        return repo

    def list_repos(self, repo_type: str) -> list[Repo]:
        with self.lock:
            return [r for (t, _), r in sorted(self.repos.items()) if t == repo_type]

    # ----------------------------------------------------------------- commits and branches

    def _add_commit(
        self, repo: Repo, branch: str, parent: str | None, files: dict[str, str], title: str, message: str, author: str
    ) -> Commit:
        date = utc_now()
        seed = json.dumps([repo.repo_id, parent, sorted(files.items()), title, message, date, len(repo.commits)])
        commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), parent, title, message, date, author, dict(files))
        repo.commits[commit.oid] = commit
        repo.branches[branch] = commit.oid
        return commit

    def commit(
        self,
        repo: Repo,
        branch: str,
        operations: list[dict[str, Any]],
        title: str,
        message: str = "",
        parent_commit: str | None = None,
    ) -> Commit:
        """Apply `file` / `deletedFile` / `deletedFolder` operations on top of `branch` as one commit."""
        with self.lock:
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch} (commits go to a branch)", "RevisionNotFound")
            head = repo.commits[repo.branches[branch]]
            if parent_commit is not None and not head.oid.startswith(parent_commit):
                raise HubError(412, f"A commit has happened since. {parent_commit} is not the head of {branch}.")
            files = dict(head.files)
            for op in operations:
                kind, path = op["key"], check_path(op["path"])
                if kind == "file":
                    files[path] = self.put_blob(op["content"])
                elif kind == "deletedFile":
                    if files.pop(path, None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                elif kind == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    gone = [p for p in files if p.startswith(prefix)]
                    if not gone:
                        raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for p in gone:
                        del files[p]
                else:
                    raise HubError(400, f"Unsupported commit operation {kind!r} for {path}.")
            commit = self._add_commit(repo, branch, head.oid, files, title, message, author=self.user)
            self._save(repo)
            return commit

    def create_branch(self, repo: Repo, branch: str, starting_point: str | None) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,99}", branch) or _FULL_OID.match(branch):
            raise HubError(400, f"Invalid branch name {branch!r}.")
        with self.lock:
            if branch in repo.branches:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            repo.branches[branch] = repo.resolve(starting_point or "main").oid
            self._save(repo)

    def delete_branch(self, repo: Repo, branch: str) -> None:
        with self.lock:
            if branch == "main" or branch not in repo.branches:
                raise HubError(400 if branch == "main" else 404, f"Cannot delete branch {branch!r}.")
            del repo.branches[branch]
            self._save(repo)


def tree_entries(commit: Commit, store: HubStore, path: str = "", recursive: bool = False) -> list[dict[str, Any]]:
    """The Hub's tree listing (files and folders under `path`) of one commit."""
    prefix = path.strip("/") + "/" if path.strip("/") else ""
    if prefix and not any(p.startswith(prefix) for p in commit.files):
        raise HubError(404, f"Entry not found: {path}", "EntryNotFound", repo_commit=commit.oid)
    folders: set[str] = set()
    files: list[str] = []
    for file_path in commit.files:
        if not file_path.startswith(prefix):
            continue
        rest = file_path[len(prefix) :].split("/")
        for depth in range(1, len(rest)):
            if depth == 1 or recursive:
                folders.add(prefix + "/".join(rest[:depth]))
        if len(rest) == 1 or recursive:
            files.append(file_path)
    out = [folder_entry(commit, f) for f in sorted(folders)]
    out += [file_entry(commit, store, f) for f in sorted(files)]
    return sorted(out, key=lambda e: e["path"])


def file_entry(commit: Commit, store: HubStore, path: str) -> dict[str, Any]:
    oid = commit.files[path]
    return {"type": "file", "oid": oid, "size": store.blob_size(oid), "path": path}


def folder_entry(commit: Commit, path: str) -> dict[str, Any]:
    prefix = path + "/"
    content = sorted((p, oid) for p, oid in commit.files.items() if p.startswith(prefix))
    return {"type": "directory", "oid": hashlib.sha1(json.dumps(content).encode()).hexdigest(), "size": 0, "path": path}


def _write_atomically(path: Path, data: bytes) -> None:
    # Not musicpeft.io.atomic_write_bytes: this package is imported before huggingface_hub (see env.py), and
    # importing musicpeft would import it.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
