"""``xnat-prep users``: manage the users file of the bundled server (see ``server.auth``).

    xnat-prep users --file users.yaml add alice [--admin]     password from stdin, or prompted
    xnat-prep users --file users.yaml passwd alice
    xnat-prep users --file users.yaml role alice PROJ1 member  (owner | member | collaborator | none)
    xnat-prep users --file users.yaml remove alice
    xnat-prep users --file users.yaml list

Passwords are never taken from the command line: they are read from stdin when it is not a
terminal (first line), otherwise prompted for twice. The file is stored with mode 0600 and only
holds salted scrypt hashes. A running server reads the file at start-up.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from xnat_prep.errors import UserError
from xnat_prep.fsutil import atomic_write
from xnat_prep.server.auth import ROLES, User, dump_users, hash_password, load_users_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--file", required=True, type=Path, help="users file (created if missing)")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="add a user (password from stdin or prompt)")
    add.add_argument("login")
    add.add_argument("--admin", action="store_true", help="make the user a site administrator")
    sub.add_parser("passwd", help="set a user's password").add_argument("login")
    sub.add_parser("remove", help="remove a user").add_argument("login")
    role = sub.add_parser("role", help="set a user's role in a project ('none' removes it)")
    role.add_argument("login")
    role.add_argument("project")
    role.add_argument("role", choices=[*ROLES, "none"])
    sub.add_parser("list", help="list users, admin flags and roles")


def read_password(login: str) -> str:
    if not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"Password for {login}: ")
        if getpass.getpass("Repeat: ") != password:
            raise UserError("passwords do not match")
    if not password:
        raise UserError(f"empty password for '{login}'")
    return password


def save(path: Path, users: dict[str, User]) -> None:
    """Write atomically with mode 0600 (the file holds password hashes)."""
    header = "# xnat-prep server users file; edit with `xnat-prep users`\n"
    atomic_write(path, header + dump_users(users), mode=0o600)


def run(args: argparse.Namespace) -> int:
    path: Path = args.file
    users = load_users_file(path) if path.exists() else {}
    login = getattr(args, "login", None)
    if args.action == "list":
        for user in users.values():
            roles = ", ".join(f"{p}={r}" for p, r in sorted(user.roles.items()))
            print(f"{user.login}\t{'admin' if user.admin else '-'}\t{roles}")
        return 0
    if args.action != "add" and login not in users:
        raise UserError(f"{path}: no user '{login}'")
    if args.action == "add":
        if login in users:
            raise UserError(f"{path}: user '{login}' exists (use passwd or role)")
        users[login] = User(login, hash_password(read_password(login)), admin=args.admin)
    elif args.action == "passwd":
        users[login].password_hash = hash_password(read_password(login))
    elif args.action == "remove":
        del users[login]
    elif args.role == "none":
        users[login].roles.pop(args.project, None)
    else:
        users[login].roles[args.project] = args.role
    save(path, users)
    return 0
