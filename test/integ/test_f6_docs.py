"""f6 docs: the options are documented alike in three places.

`natwrp serve --help` / `natwrp agent --help` (src/core/cfg_*.c), the README's
option tables and the man page docs/natwrp.1 must list the same flags for
each role; the environment variable and the default of a flag must agree
wherever two of them state it. And the man page is `mandoc -T lint` clean.
"""

import os
import re
import shutil
import subprocess

from harness import ROOT, check, eq, fail

README = os.path.join(ROOT, "README.md")
MANPAGE = os.path.join(ROOT, "docs", "natwrp.1")
SKIP = {"--help", "--version"}


def _norm_default(v):
    """The first word of a default, without quotes, backticks or 'the'."""
    v = v.replace("`", "").replace('"', "").strip()
    v = re.sub(r"^(the|a)\s+", "", v)
    m = re.match(r"[^\s,;()]+", v)
    return m.group(0).lower() if m else ""


def from_help(text):
    """{flag: {"env": name or None, "default": first word or None}}."""
    out = {}
    cur = None
    for line in text.splitlines():
        m = re.match(r"^  (?:-h, )?(--[a-z][a-z-]*)(?:=0)?(?: \S+)?(?:\s{2,}|$)", line)
        if m:
            cur = m.group(1)
            out[cur] = {"text": line[m.end():]}
            continue
        if cur and re.match(r"^\s{6,}\S", line):
            out[cur]["text"] += " " + line.strip()
        else:
            cur = None
    for flag, d in out.items():
        t = d.pop("text")
        m = re.search(r"\benv ([A-Z][A-Z0-9_]+)", t) or re.match(r"\s*([A-Z][A-Z0-9_]+)(?:=[01])?:", t)
        d["env"] = m.group(1) if m else None
        m = re.search(r"\(default[: ]\s*([^;)]+)", t)
        d["default"] = _norm_default(m.group(1)) if m else None
    return {k: v for k, v in out.items() if k not in SKIP}


def from_readme(text):
    """{"serve": {flag: {...}}, "agent": {...}} from the option tables."""
    out = {"serve": {}, "agent": {}}
    role = None
    for line in text.splitlines():
        if line.startswith("### `natwrp serve`"):
            role = "serve"
        elif line.startswith("### `natwrp agent`"):
            role = "agent"
        elif line.startswith("## "):
            role = None
        elif role and line.startswith("| `--"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            m = re.match(r"`(--[a-z][a-z-]*)", cells[0])
            env = cells[1].replace("`", "").split("=")[0].strip() or None
            out[role][m.group(1)] = {"env": env, "default": _norm_default(cells[2])}
    return out


def from_man(text):
    out = {"serve": {}, "agent": {}}
    role = None
    cur = None
    for line in text.splitlines():
        if line.startswith(".Sh "):
            role = {"SERVE OPTIONS": "serve", "AGENT OPTIONS": "agent"}.get(line[4:].strip())
            cur = None
        elif role and line.startswith(".It Fl -"):
            m = re.match(r"\.It Fl (-[a-z][a-z-]*)", line)
            cur = "-" + m.group(1)
            out[role][cur] = {"env": None, "default": None}
        elif role and cur and line.startswith(".Ev ") and out[role][cur]["env"] is None:
            out[role][cur]["env"] = line.split()[1]
        elif role and cur and line.startswith("Default: "):
            out[role][cur]["default"] = _norm_default(line[len("Default: "):].rstrip("."))
    for role in out:
        for f in SKIP:
            out[role].pop(f, None)
    return out


def _compare(role, helpd, readme, man):
    problems = []
    names = {"--help": helpd, "README.md": readme, "docs/natwrp.1": man}
    allflags = set(helpd) | set(readme) | set(man)
    for f in sorted(allflags):
        missing = [n for n, d in names.items() if f not in d]
        if missing:
            problems.append("%s %s: missing from %s" % (role, f, ", ".join(missing)))
            continue
        envs = {n: d[f]["env"] for n, d in names.items()
                if d[f]["env"] is not None or n != "--help"}
        if len(set(envs.values())) > 1:
            problems.append("%s %s: environment variable differs: %r" % (role, f, envs))
        dfl = {n: d[f]["default"] for n, d in names.items() if d[f]["default"]}
        if len(set(dfl.values())) > 1:
            problems.append("%s %s: default differs: %r" % (role, f, dfl))
    return problems


def test_f6_docs_flags_agree(t):
    readme = from_readme(open(README).read())
    man = from_man(open(MANPAGE).read())
    problems = []
    for role in ("serve", "agent"):
        rc, out = t.run_natwrp("help-" + role, [role, "--help"])
        eq(rc, 0, "natwrp %s --help exit status" % role)
        helpd = from_help(out)
        check(len(helpd) >= 20, "%s --help: only %d flags parsed" % (role, len(helpd)))
        problems += _compare(role, helpd, readme[role], man[role])
    if problems:
        fail("the docs disagree:\n  " + "\n  ".join(problems))


def test_f6_docs_checker_catches(t):
    """The comparison itself: a flag dropped from one place, or a default
    or variable changed, is reported."""
    rc, out = t.run_natwrp("help-serve", ["serve", "--help"])
    eq(rc, 0, "serve --help exit status")
    helpd = from_help(out)
    readme = from_readme(open(README).read())["serve"]
    man = from_man(open(MANPAGE).read())["serve"]
    eq(_compare("serve", helpd, readme, man), [], "the real docs")
    r2 = dict(readme)
    del r2["--grace"]
    check(any("--grace: missing from README.md" in p for p in _compare("serve", helpd, r2, man)),
          "a flag missing from the README went unnoticed")
    m2 = {k: dict(v) for k, v in man.items()}
    m2["--max-streams"]["default"] = "999"
    check(any("--max-streams: default differs" in p
              for p in _compare("serve", helpd, readme, m2)), "a wrong default went unnoticed")
    m2["--window"]["env"] = "WINDOWS"
    check(any("--window: environment variable differs" in p
              for p in _compare("serve", helpd, readme, m2)), "a wrong variable went unnoticed")
    eq(helpd["--response-timeout"], {"env": "RESPONSE_TIMEOUT", "default": "60"},
       "--response-timeout as parsed from --help")


def test_f6_manpage_lint(t):
    mandoc = shutil.which("mandoc")
    check(mandoc, "mandoc is not installed (scripts/deps.sh installs it)")
    p = subprocess.run([mandoc, "-T", "lint", "-W", "style", MANPAGE], capture_output=True,
                       text=True, timeout=30)
    out = "\n".join(x for x in (p.stdout + p.stderr).splitlines()
                    if "outdated mandoc.db" not in x)
    eq((p.returncode, out), (0, ""), "mandoc -T lint docs/natwrp.1")
    # It renders, and names both subcommands and the signals.
    p = subprocess.run([mandoc, "-T", "ascii", MANPAGE], capture_output=True, text=True,
                       timeout=30)
    eq(p.returncode, 0, "mandoc -T ascii exit status")
    text = re.sub(r".\x08", "", p.stdout)
    for word in ("SERVE OPTIONS", "AGENT OPTIONS", "SIGTERM", "SIGHUP", "EXIT STATUS",
                 "NOTIFY_SOCKET", "EXAMPLES", "FILES"):
        check(word in text, "the man page lacks %s" % word)
