"""A local server speaking just enough of the Hugging Face Hub HTTP API for `push_to_hub` and `from_pretrained`:
repo create, README metadata validation, preupload, the Git LFS batch API (basic transfer: upload, verify), the
NDJSON commit endpoint and file resolve (HEAD and GET). Point huggingface_hub at it with HF_ENDPOINT, and with
HF_HUB_DISABLE_XET=1 (the Hub's Xet storage is not spoken here).

As on the Hub, weights (*.safetensors, and any file over 10 MB) must take the LFS path: preupload says so, and a
commit that sends them inline, or names an LFS object that was not uploaded and verified, is refused."""

import base64
import hashlib
import json
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPO = r"(?P<repo>[^/]+/[^/]+)"
PREUPLOAD = re.compile(rf"^/api/models/{REPO}/preupload/(?P<revision>[^/]+)$")
COMMIT = re.compile(rf"^/api/models/{REPO}/commit/(?P<revision>[^/]+)$")
LFS_BATCH = re.compile(rf"^/{REPO}\.git/info/lfs/objects/batch$")
LFS_UPLOAD = re.compile(r"^/lfs/upload/(?P<oid>[0-9a-f]{64})$")
LFS_VERIFY = re.compile(r"^/lfs/verify/(?P<oid>[0-9a-f]{64})$")
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx", ".png", ".jpg", ".mp4")
LFS_MIN_SIZE = 10 * 1024 * 1024


def must_be_lfs(path: str, size: int) -> bool:
    return path.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE


RESOLVE = re.compile(rf"^/{REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)$")


class HubState:
    def __init__(self):
        self.repos: dict[str, dict[str, bytes]] = {}
        self.commits: dict[str, str] = {}
        self.lfs_uploaded: dict[str, bytes] = {}  # by sha256, once PUT
        self.lfs_verified: set[str] = set()
        self.lfs_commits: list[str] = []  # the paths committed as LFS objects
        self.lock = threading.Lock()

    def commit(self, repo: str, files: dict[str, bytes]) -> str:
        with self.lock:
            self.repos[repo].update(files)
            digest = hashlib.sha1(json.dumps(sorted(self.repos[repo])).encode() + str(len(self.commits)).encode())
            self.commits[repo] = digest.hexdigest()
            return self.commits[repo]


class HubHandler(BaseHTTPRequestHandler):
    state: HubState

    def log_message(self, format, *args) -> None:  # keep test output quiet
        pass

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def reply(self, status: int, payload=None, headers: dict | None = None, content: bytes | None = None) -> None:
        data = content if content is not None else json.dumps(payload or {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if content is not None else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def error(self, status: int, code: str) -> None:
        self.reply(status, {"error": code}, {"X-Error-Code": code, "X-Error-Message": code})

    def do_POST(self) -> None:
        path = self.path.split("?")[0]
        if path == "/api/repos/create":
            return self.create_repo(json.loads(self.body()))
        if path == "/api/validate-yaml":
            self.body()
            return self.reply(HTTPStatus.OK, {"errors": [], "warnings": []})
        if match := PREUPLOAD.match(path):
            return self.preupload(match["repo"], json.loads(self.body()))
        if match := COMMIT.match(path):
            return self.commit(match["repo"], self.body())
        if match := LFS_BATCH.match(path):
            return self.lfs_batch(match["repo"], json.loads(self.body()))
        if match := LFS_VERIFY.match(path):
            return self.lfs_verify(match["oid"], json.loads(self.body()))
        self.error(HTTPStatus.NOT_FOUND, "NotFound")

    def do_PUT(self) -> None:
        match = LFS_UPLOAD.match(self.path.split("?")[0])
        if not match:
            return self.error(HTTPStatus.NOT_FOUND, "NotFound")
        content = self.body()
        if hashlib.sha256(content).hexdigest() != match["oid"]:
            return self.error(HTTPStatus.BAD_REQUEST, "OidMismatch")
        self.state.lfs_uploaded[match["oid"]] = content
        self.reply(HTTPStatus.OK)

    def lfs_batch(self, repo: str, request: dict) -> None:
        if repo not in self.state.repos or request.get("operation") != "upload" or "basic" not in request["transfers"]:
            return self.error(HTTPStatus.BAD_REQUEST, "BadLfsRequest")
        host = f"http://{self.headers['Host']}"
        objects = [
            {
                "oid": item["oid"],
                "size": item["size"],
                "authenticated": True,
                "actions": {
                    "upload": {"href": f"{host}/lfs/upload/{item['oid']}"},
                    "verify": {"href": f"{host}/lfs/verify/{item['oid']}"},
                },
            }
            for item in request["objects"]
        ]
        self.reply(HTTPStatus.OK, {"transfer": "basic", "objects": objects})

    def lfs_verify(self, oid: str, request: dict) -> None:
        content = self.state.lfs_uploaded.get(oid)
        if content is None or request.get("oid") != oid or request.get("size") != len(content):
            return self.error(HTTPStatus.NOT_FOUND, "LfsObjectNotFound")
        self.state.lfs_verified.add(oid)
        self.reply(HTTPStatus.OK)

    def create_repo(self, request: dict) -> None:
        repo = f"{request['organization']}/{request['name']}" if request.get("organization") else request["name"]
        url = f"http://{self.headers['Host']}/{repo}"
        if repo in self.state.repos:
            return self.reply(HTTPStatus.CONFLICT, {"error": "You already created this model repo", "url": url})
        self.state.repos[repo] = {}
        self.reply(HTTPStatus.OK, {"url": url, "name": repo})

    def preupload(self, repo: str, request: dict) -> None:
        if repo not in self.state.repos:
            return self.error(HTTPStatus.NOT_FOUND, "RepoNotFound")
        files = [
            {"path": f["path"], "uploadMode": "lfs" if must_be_lfs(f["path"], f["size"]) else "regular",
             "shouldIgnore": False}
            for f in request["files"]
        ]  # fmt: skip
        self.reply(HTTPStatus.OK, {"files": files, "commitOid": self.state.commits.get(repo)})

    def commit(self, repo: str, body: bytes) -> None:
        if repo not in self.state.repos:
            return self.error(HTTPStatus.NOT_FOUND, "RepoNotFound")
        if self.headers.get("Content-Type") != "application/x-ndjson":
            return self.error(HTTPStatus.BAD_REQUEST, "BadRequest")
        files, lfs_paths = {}, []
        for line in body.splitlines():
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "file" and value.get("encoding") == "base64":
                content = base64.b64decode(value["content"])
                if must_be_lfs(value["path"], len(content)):
                    return self.error(HTTPStatus.BAD_REQUEST, f"{value['path']}MustBeLfs")
                files[value["path"]] = content
            elif item["key"] == "lfsFile" and value.get("oid") in self.state.lfs_verified:
                files[value["path"]] = self.state.lfs_uploaded[value["oid"]]
                lfs_paths.append(value["path"])
            elif item["key"] != "header":
                return self.error(HTTPStatus.BAD_REQUEST, f"Unsupported{item['key']}")
        oid = self.state.commit(repo, files)
        self.state.lfs_commits += lfs_paths
        url = f"http://{self.headers['Host']}/{repo}/commit/{oid}"
        self.reply(HTTPStatus.OK, {"commitUrl": url, "commitOid": oid, "pullRequestUrl": None})

    def do_HEAD(self) -> None:
        self.resolve()

    def do_GET(self) -> None:
        self.resolve()

    def resolve(self) -> None:
        match = RESOLVE.match(self.path.split("?")[0])
        if not match or match["repo"] not in self.state.repos:
            return self.error(HTTPStatus.NOT_FOUND, "RepoNotFound")
        content = self.state.repos[match["repo"]].get(match["path"])
        if content is None:
            return self.error(HTTPStatus.NOT_FOUND, "EntryNotFound")
        headers = {"X-Repo-Commit": self.state.commits[match["repo"]], "ETag": f'"{hashlib.sha1(content).hexdigest()}"'}
        self.reply(HTTPStatus.OK, headers=headers, content=content)


class FakeHub:
    """`with FakeHub() as hub:` serves on 127.0.0.1 at `hub.endpoint` in a background thread."""

    def __init__(self):
        self.state = HubState()
        handler = type("Handler", (HubHandler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()
