# dbt-remote: a warm dbt worker ("zygote"): imports dbt once, then forks one fresh child per
# dbt invocation.
#
# dbt-server starts it as `python -c <this file>` with the listening Unix socket as fd 3 and
# the environment dbt gets (never the server's secrets); it prints `ready` on stdout once dbt
# is imported. Per connection (same uid only): one
# JSON request line with two file descriptors (the child's stdout and stderr):
#   {"argv": [...], "cwd": "...", "env": {...}, "kind": "dbt" | "python", "code": "..."}
# The reply is `{"pid": N}` once the child runs, then `{"exit": code}` or `{"signal": n}` when
# it ends. A connection that closes before the child ended (the runner is gone) kills the
# child's process group. A child is never reused. No threads are started here (fork safety).
import atexit
import importlib
import json
import os
import pkgutil
import select
import signal
import socket
import struct
import sys
import traceback

MAX_REQUEST = 8 * 1024 * 1024
REQUEST_TIMEOUT = 5.0
PARENT_POLL = 1.0
CANNOT_IMPORT_DBT = 3  # the pool then stops starting workers


def log(message):
    print(f"dbt-remote worker {os.getpid()}: {message}", file=sys.stderr, flush=True)


def preload():
    """Imports dbt's CLI, every installed adapter and what manifest jobs use."""
    import dbt.cli.main  # noqa: F401  (the import this worker exists for)
    import dbt.adapters

    for module in pkgutil.iter_modules(dbt.adapters.__path__):
        if not module.ispkg:
            continue
        try:
            adapter = importlib.import_module(f"dbt.adapters.{module.name}")
            if not hasattr(adapter, "Plugin"):
                continue
        except Exception:  # an adapter that cannot load is dbt's business at run time
            continue
    for name in ("msgpack", "dbt.contracts.graph.manifest", "dbt.parser.manifest"):
        try:
            importlib.import_module(name)
        except Exception:
            pass


def peer_uid(conn):
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("iII"))
    _pid, uid, _gid = struct.unpack("iII", creds)
    return uid


def read_request(conn):
    """One JSON line and the two descriptors sent with it; raises on anything else."""
    conn.settimeout(REQUEST_TIMEOUT)
    data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 2)
    try:
        if len(fds) != 2:
            raise ValueError(f"expected 2 file descriptors, got {len(fds)}")
        while b"\n" not in data:
            if len(data) > MAX_REQUEST:
                raise ValueError("request too large")
            more = conn.recv(65536)
            if not more:
                raise ValueError("connection closed in the request")
            data += more
        request = json.loads(data.split(b"\n", 1)[0])
        if not isinstance(request, dict):
            raise ValueError("the request is not an object")
        argv, env, cwd = request.get("argv"), request.get("env"), request.get("cwd")
        if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
            raise ValueError("argv must be a list of strings")
        if not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
            raise ValueError("env must map names to strings")
        if not isinstance(cwd, str):
            raise ValueError("cwd must be a string")
        if request.get("kind") not in ("dbt", "python"):
            raise ValueError("kind must be dbt or python")
        if request["kind"] == "python" and not isinstance(request.get("code"), str):
            raise ValueError("kind python needs code")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    conn.settimeout(None)
    return request, fds


def closed_by_peer(conn):
    """True if the client hung up already (it gave up waiting)."""
    readable, _, _ = select.select([conn], [], [], 0)
    if not readable:
        return False
    try:
        return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except OSError:
        return True


def child(request, fds, close):
    """The forked child: becomes the dbt process of one job; never returns."""
    code = 2
    try:
        os.setpgid(0, 0)
        set_dumpable(1)  # as a freshly executed dbt is
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for s in close:
            s.close()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in (null, *fds):
            if fd > 2:
                os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        code = run(request)
    except SystemExit as e:
        code = exit_code(e)
    except KeyboardInterrupt:
        code = -signal.SIGINT
    except BaseException:
        traceback.print_exc()
        code = 2
    finally:
        try:
            atexit._run_exitfuncs()
        except BaseException:
            pass
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        if code < 0:  # as an uncaught KeyboardInterrupt does: end by the signal itself
            signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
        os._exit(code & 0xFF)


def exit_code(e):
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code
    print(e.code, file=sys.stderr)
    return 1


def run(request):
    """Runs the request in this process; its exit code (dbt raises SystemExit)."""
    if request["kind"] == "dbt":
        from dbt.cli.main import cli
        # sys.path as the `dbt` script has it: no entry for the work dir.

        sys.argv = ["dbt", *request["argv"]]
        cli.main(args=request["argv"], prog_name="dbt")
        return 0
    sys.argv = ["-c", *request["argv"]]
    sys.path.insert(0, "")  # as `python -c` has it: the work dir
    exec(compile(request["code"], "<string>", "exec"), {"__name__": "__main__"})
    return 0


def send(conn, message):
    try:
        conn.sendall(json.dumps(message).encode() + b"\n")
    except OSError:
        pass


def serve(listener):
    parent = os.getppid()
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    draining = []
    signal.signal(signal.SIGTERM, lambda *_: draining.append(True))
    listener.setblocking(False)
    children = {}  # pid -> connection (None once the runner hung up)
    while True:
        if (draining or os.getppid() != parent) and listener is not None:
            listener.close()
            listener = None
        if listener is None and not children:
            return
        waiting = [c for c in children.values() if c is not None]
        fds = [wake_r, *waiting] + ([listener] if listener is not None else [])
        try:
            readable, _, _ = select.select(fds, [], [], PARENT_POLL)
        except InterruptedError:
            readable = []
        if wake_r in readable:
            try:
                while os.read(wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        reap(children)
        for pid, conn in list(children.items()):
            if conn is not None and conn in readable and hung_up(conn):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
                children[pid] = None
                conn.close()
        if listener is not None and listener in readable:
            accept(listener, children, wake_r, wake_w)


def hung_up(conn):
    try:
        return conn.recv(4096, socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def reap(children):
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is None:
            continue
        if os.WIFSIGNALED(status):
            send(conn, {"signal": os.WTERMSIG(status)})
        else:
            send(conn, {"exit": os.waitstatus_to_exitcode(status)})
        conn.close()


def accept(listener, children, wake_r, wake_w):
    try:
        conn, _ = listener.accept()
    except (BlockingIOError, InterruptedError):
        return  # another worker took it
    try:
        conn.setblocking(True)
        if peer_uid(conn) != os.getuid():
            conn.close()
            return
        request, fds = read_request(conn)
    except Exception as e:
        log(f"refused a request: {e}")
        send(conn, {"error": str(e)})
        conn.close()
        return
    if closed_by_peer(conn):
        for fd in fds:
            os.close(fd)
        conn.close()
        return
    close = [listener, conn, *(c for c in children.values() if c is not None)]
    pid = os.fork()
    if pid == 0:
        os.close(wake_r)
        os.close(wake_w)
        child(request, fds, close)
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass  # the child did it first
    for fd in fds:
        os.close(fd)
    children[pid] = conn
    send(conn, {"pid": pid})


def set_dumpable(flag):
    try:
        import ctypes

        ctypes.CDLL(None).prctl(4, flag, 0, 0, 0)  # PR_SET_DUMPABLE
    except Exception:
        pass


def main():
    # `python -c` puts the current dir first on sys.path: the server's folder here, the job's
    # work dir in a child; neither may shadow a module.
    sys.path[:] = [p for p in sys.path if p not in ("", ".")]
    set_dumpable(0)  # jobs (same uid) may not ptrace the worker that forks every job
    try:
        preload()
    except Exception as e:
        log(f"cannot import dbt ({type(e).__name__}: {e}): exiting")
        sys.exit(CANNOT_IMPORT_DBT)
    import threading

    if threading.active_count() > 1:
        log("threads were started by the imports: forking may be unsafe")
    listener = socket.socket(fileno=3)
    print("ready", flush=True)  # the pool publishes the socket once one worker is ready
    serve(listener)


main()
