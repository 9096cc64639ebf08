"""A real dovecot IMAP server on 127.0.0.1 for tests and benchmarks: a config written to a
temporary folder, one passwd-file user, mail in a temporary maildir, a free port, no TLS.

    with Dovecot() as server:
        server.append(raw_mail)            # deliver a mail to INBOX (IMAP APPEND)
        server.mailbox_settings()          # the dict for settings.mailboxes
"""

from __future__ import annotations

import imaplib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
USER, PASSWORD = "ap", "secret-ap"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Dovecot:
    def __init__(self):
        # Its own folder under /tmp, open to traverse: dovecot's processes run as other users
        # and must reach the passwd file and the maildir (pytest's tmp_path is private to root).
        self.root = Path(tempfile.mkdtemp(prefix="ic-dovecot-"))
        os.chmod(self.root, 0o755)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def _config(self) -> Path:
        r = self.root
        for sub in ("run", "state", "mail", "home"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        if os.getuid() == 0:
            uid, gid, internal, login = 65534, 65534, "dovecot", "dovenull"
            for sub in ("mail", "home"):
                os.chown(r / sub, uid, gid)
        else:
            import pwd

            uid, gid = os.getuid(), os.getgid()
            internal = login = pwd.getpwuid(uid).pw_name
        (r / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
        conf = r / "dovecot.conf"
        conf.write_text(f"""
base_dir = {r}/run
state_dir = {r}/state
log_path = {r}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {internal}
default_login_user = {login}
first_valid_uid = 0
mail_location = maildir:{r}/mail/%u
mail_max_userip_connections = 200
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {r}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={r}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
""")
        return conf

    def start(self) -> Dovecot:
        conf = self._config()
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""
                log = (self.root / "dovecot.log").read_text() if (self.root / "dovecot.log").exists() else ""
                raise RuntimeError(f"dovecot exited: {out}\n{log}")
            try:
                with self.client():
                    return self
            except (OSError, imaplib.IMAP4.error):
                time.sleep(0.1)
        raise RuntimeError("dovecot did not answer within 20 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Dovecot:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- use -----------------------------------------------------------------------------------

    def client(self) -> imaplib.IMAP4:
        c = imaplib.IMAP4("127.0.0.1", self.port, timeout=30)
        c.login(USER, PASSWORD)
        return c

    def append(self, raw: bytes, folder: str = "INBOX") -> None:
        with self.client() as c:
            typ, data = c.append(folder, None, None, raw)
            assert typ == "OK", data

    def append_many(self, raws, folder: str = "INBOX") -> None:
        with self.client() as c:
            for raw in raws:
                typ, data = c.append(folder, None, None, raw)
                assert typ == "OK", data

    def count(self, folder: str = "INBOX") -> int:
        with self.client() as c:
            typ, data = c.select(folder, readonly=True)
            if typ != "OK":
                return 0
            return int(data[0])

    def flagged(self, keyword: str, folder: str = "INBOX") -> int:
        with self.client() as c:
            c.select(folder, readonly=True)
            typ, data = c.search(None, "KEYWORD", keyword)
            return len(data[0].split()) if typ == "OK" and data and data[0] else 0

    def mailbox_settings(self, **extra) -> dict:
        return {"name": "ap-inbox", "host": "127.0.0.1", "port": self.port, "user": USER, "password": PASSWORD,
                "ssl": False, "starttls": False, **extra}
