"""Shell completion scripts for bash, zsh and fish, and their installation.

Completion itself is the app's: each script calls `rungefit` back with _RUNGEFIT_COMPLETE set
(`complete_bash`, `complete_zsh`, `complete_fish`, Typer's protocol) and the app answers with the
candidates, so commands, options, choice values and run names always come from the installed CLI.
This module writes the scripts, through public routes only:

- zsh and fish get Typer's own scripts, as the app prints them when a shell asks for them
  (`_RUNGEFIT_COMPLETE=source_zsh rungefit`);
- bash gets a script of its own (BASH_SCRIPT) speaking the same protocol: Typer's hands bash's words
  on as they are, and bash splits words at ':' (COMP_WORDBREAKS), so `--layers 20:t` arrived as `t`
  and completed file names. Where a path goes, the app answers it with FILE_NAMES (complete_path,
  which every parameter that takes a path declares as its completion).

What needs the CLI takes its command as an argument (`typer.main.get_command(app)`, or the running
one, `ctx.find_root().command`): app.py imports this module, never the other way round.

The committed copies in completions/ are what `rungefit completion SHELL` prints; regenerate them
with `python -m rungefit.cli.completion completions` (which runs that command), and a test fails
when they are stale.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

from rungefit.errors import RungefitError
from rungefit.files import atomic_write, describe

PROG_NAME = "rungefit"
COMPLETE_VAR = "_RUNGEFIT_COMPLETE"
FILES = {"bash": "rungefit.bash", "zsh": "_rungefit", "fish": "rungefit.fish"}
SHELLS = tuple(FILES)


# Typer's protocol: the words so far in COMP_WORDS (joined by IFS), the index of the one being
# completed in COMP_CWORD, and the candidates back one a line. Around it, what bash needs:
# - bash splits the line at every character of COMP_WORDBREAKS, ':' among them, so that
#   `--layers 20:t` arrives as `20` `:` `t`. The pieces that touch a ':' are joined back (COMP_LINE
#   shows where blanks were), without changing the user's COMP_WORDBREAKS;
# - readline replaces only the text after the word's last ':', so the candidates are cut to that;
# - file names where the app's answer ends with FILE_NAMES: for a value that is a path (not, say,
#   after --layers, where no candidate is no candidate).
BASH_SCRIPT = r"""_{prog}_completion() {
    local IFS=$'\n'
    local line=${COMP_LINE:0:COMP_POINT} words=() word glued=0 i
    for ((i = 0; i <= COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        if [[ $line == [[:blank:]]* ]]; then
            glued=0
            line=${line#"${line%%[![:blank:]]*}"}
        fi
        if ((glued)) && [[ $word == :* || ${words[-1]} == *: ]]; then
            words[-1]+=$word
        else
            words+=("$word")
        fi
        line=${line#"$word"}
        glued=1
    done
    local current=${words[-1]}
    COMPREPLY=( $( env COMP_WORDS="${words[*]}" \
                   COMP_CWORD=$(( ${#words[@]} - 1 )) \
                   {var}=complete_bash $1 ) )
    if [[ ${COMPREPLY[*]} == *{file_names} ]]; then
        COMPREPLY=()
        compopt -o default
    elif [[ $current == *:* && $COMP_WORDBREAKS == *:* ]]; then
        COMPREPLY=( "${COMPREPLY[@]#"${current%"${current##*:}"}"}" )
    fi
    return 0
}

complete -F _{prog}_completion {prog}
"""


def completion_script(shell: str, command) -> str:
    """The completion script for `shell` (bash, zsh or fish), as text, for the app whose click-style
    command is `command`: BASH_SCRIPT for bash, the app's own answer for the others."""
    if shell == "bash":
        return BASH_SCRIPT.replace("{prog}", PROG_NAME).replace("{var}", COMPLETE_VAR).replace("{file_names}", FILE_NAMES)
    if shell not in SHELLS:
        raise RungefitError(f"rungefit completes bash, zsh and fish, not {shell}")
    return typers_script(shell, command)


def typers_script(shell: str, command) -> str:
    """Typer's script for `shell`: what the app prints when a shell sources it, i.e. when it runs with
    _RUNGEFIT_COMPLETE=source_SHELL. Asked in this process (the variable set, stdout caught), as
    Click's documented activation `eval "$(_FOO_COMPLETE=zsh_source foo)"` asks a subprocess."""
    printed = io.StringIO()
    previous = os.environ.get(COMPLETE_VAR)
    os.environ[COMPLETE_VAR] = f"source_{shell}"
    try:
        with contextlib.redirect_stdout(printed), contextlib.suppress(SystemExit):
            command.main(args=[], prog_name=PROG_NAME, complete_var=COMPLETE_VAR)
    finally:
        if previous is None:
            del os.environ[COMPLETE_VAR]
        else:
            os.environ[COMPLETE_VAR] = previous
    script = printed.getvalue().strip()
    if COMPLETE_VAR not in script:  # a Typer that no longer answers source_SHELL: no script, or the help
        raise RungefitError(f"this Typer version does not print its {shell} script; use completions/ from rungefit's source")
    return script + "\n"


# What the app answers for a path's value when bash asks, after the word typed so far (Typer keeps
# only the candidates that start with it): "complete file names here", which bash could not tell
# from a value with no candidate. zsh and fish complete file names when no candidate comes.
FILE_NAMES = "//rungefit-file-names"


def complete_path(incomplete: str) -> list[str]:
    """The TAB completion of every parameter that takes a path (options.py's shared ones, FILE, the
    --out options): the word and FILE_NAMES for rungefit's bash script, no candidate for zsh and fish."""
    return [incomplete + FILE_NAMES] if os.environ.get(COMPLETE_VAR) == "complete_bash" else []


def detect_shell() -> str | None:
    """The shell that runs rungefit (shellingham, a dependency of Typer's, walks the process tree), else $SHELL's name."""
    try:
        import shellingham

        return shellingham.detect_shell()[0]
    except (ImportError, OSError):  # not installed, or no shell found (ShellDetectionFailure is an OSError)
        return os.path.basename(os.environ.get("SHELL", "")) or None


# Where each shell finds the script (under the home directory), and the rc file and line that make it
# look there (fish looks in its completions folder by itself). The places Typer's installation used.
INSTALLS = {
    "bash": (".bash_completions/rungefit.sh", ".bashrc", "source '{script}'"),
    "zsh": (".zfunc/_rungefit", ".zshrc", "fpath+=~/.zfunc; autoload -Uz compinit; compinit"),
    "fish": (".config/fish/completions/rungefit.fish", None, None),
}


def install(shell: str, command, home: Path) -> Path:
    """Install `shell`'s script under `home` (INSTALLS) and return where: the script is replaced in
    one step, and the rc file only appended to, once (it may be a link into someone's dotfiles)."""
    if shell not in INSTALLS:
        raise RungefitError(f"rungefit completes bash, zsh and fish, not {shell}; print a script with `rungefit completion bash|zsh|fish`")
    where, rc_name, rc_line = INSTALLS[shell]
    script = home / where
    try:
        text = completion_script(shell, command)
        script.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(script, text.encode())
        if rc_name is not None:
            rc, line = home / rc_name, rc_line.format(script=script)
            old = rc.read_text() if rc.is_file() else ""
            if line not in old.splitlines():
                with open(rc, "a") as handle:
                    handle.write(("\n" if old and not old.endswith("\n") else "") + line + "\n")
    except (OSError, UnicodeDecodeError) as error:
        detail = describe(error) if isinstance(error, OSError) else "it is not UTF-8 text"
        raise RungefitError(f"cannot install {shell} completion ({detail}); print the script with `rungefit completion {shell}` and install it by hand") from None
    return script


def write_all(directory: Path) -> list[Path]:
    """(Re)write every shell's script into directory: what `rungefit completion SHELL` prints, run
    from this checkout."""
    checkout = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [checkout, os.environ.get("PYTHONPATH")]))}
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for shell, name in FILES.items():
        printed = subprocess.run([sys.executable, "-m", PROG_NAME, "completion", shell], env=env, capture_output=True, text=True, check=True)
        path = directory / name
        path.write_text(printed.stdout)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_all(Path(sys.argv[1] if len(sys.argv) > 1 else "completions")):
        print(path)
