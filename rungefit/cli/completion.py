"""Shell completion scripts for bash, zsh and fish, generated from the CLI's Typer machinery.

The committed copies in completions/ are regenerated with `python -m rungefit.cli.completion` and a
test fails when they are stale. Each script calls back into `rungefit` with _RUNGEFIT_COMPLETE
set, so commands, options, choice values and run names always come from the installed CLI.

bash gets a script of its own (BASH_SCRIPT), speaking Typer's protocol: Typer's hands bash's
words on as they are, and bash splits words at ':' (COMP_WORDBREAKS), so `--layers 20:t` arrived
as `t` and completed file names.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rungefit.errors import RungefitError

PROG_NAME = "rungefit"
COMPLETE_VAR = "_RUNGEFIT_COMPLETE"
FILES = {"bash": "rungefit.bash", "zsh": "_rungefit", "fish": "rungefit.fish"}


# Typer's protocol: the words so far in COMP_WORDS (joined by IFS), the index of the one being
# completed in COMP_CWORD, and the candidates back one a line. Around it, what bash needs:
# - bash splits the line at every character of COMP_WORDBREAKS, ':' among them, so that
#   `--layers 20:t` arrives as `20` `:` `t`. The pieces that touch a ':' are joined back (COMP_LINE
#   shows where blanks were), without changing the user's COMP_WORDBREAKS;
# - readline replaces only the text after the word's last ':', so the candidates are cut to that;
# - file names only after an option that takes a path (not, say, after --layers).
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
    if [[ $current == *:* && $COMP_WORDBREAKS == *:* ]]; then
        COMPREPLY=( "${COMPREPLY[@]#"${current%"${current##*:}"}"}" )
    fi
    if ((${#COMPREPLY[@]} == 0 && ${#words[@]} > 1)); then
        case ${words[-2]} in
            {path_options}) compopt -o default ;;
        esac
    fi
    return 0
}

complete -F _{prog}_completion {prog}
"""


def completion_script(shell: str) -> str:
    """The completion script for `shell`, as text: BASH_SCRIPT for bash, Typer's for the others."""
    if shell == "bash":
        template = BASH_SCRIPT.replace("{prog}", PROG_NAME).replace("{var}", COMPLETE_VAR)
        return template.replace("{path_options}", "|".join(path_options()))
    try:  # Typer has no public function for its zsh and fish scripts
        from typer._completion_shared import get_completion_script
    except ImportError:
        raise RungefitError(f"this Typer version cannot write the {shell} script; use completions/ from rungefit's source") from None
    return get_completion_script(prog_name=PROG_NAME, complete_var=COMPLETE_VAR, shell=shell).rstrip("\n") + "\n"


def detect_shell() -> str | None:
    """The shell that runs rungefit, as Typer finds it (shellingham, a dependency of Typer's), else $SHELL's name."""
    try:
        import shellingham

        return shellingham.detect_shell()[0]
    except (ImportError, OSError):  # not installed, or no shell found (ShellDetectionFailure is an OSError)
        return os.path.basename(os.environ.get("SHELL", "")) or None


def install_bash(home: Path) -> Path:
    """rungefit's bash script where Typer's --install-completion puts its own (~/.bash_completions),
    sourced from ~/.bashrc: the script is replaced in one step, and ~/.bashrc only appended to (it
    may be a link into someone's dotfiles)."""
    from rungefit.files import atomic_write, describe

    script, rc = home / ".bash_completions" / f"{PROG_NAME}.sh", home / ".bashrc"
    line = f"source '{script}'"
    try:
        script.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(script, completion_script("bash").encode())
        text = rc.read_text() if rc.is_file() else ""
        if line not in text.splitlines():
            with open(rc, "a") as handle:
                handle.write(("\n" if text and not text.endswith("\n") else "") + line + "\n")
    except (OSError, UnicodeDecodeError) as error:
        detail = describe(error) if isinstance(error, OSError) else "it is not UTF-8 text"
        raise RungefitError(f"cannot install bash completion ({detail}); print the script with `rungefit completion bash` and install it by hand") from None
    return script


def path_options() -> list[str]:
    """Every option of a command whose value is a path (annotated pathlib.Path), sorted."""
    import inspect
    import typing

    from typer.main import get_command

    from rungefit.cli.app import app

    options = set()
    for command in get_command(app).commands.values():
        hints = typing.get_type_hints(inspect.unwrap(command.callback))
        paths = {name for name, hint in hints.items() if Path in (hint, *typing.get_args(hint))}
        options.update(opt for param in command.params if param.name in paths for opt in param.opts)
    return sorted(options)


def write_all(directory: Path) -> list[Path]:
    """(Re)write every shell's script into directory."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for shell, name in FILES.items():
        path = directory / name
        path.write_text(completion_script(shell))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_all(Path(sys.argv[1] if len(sys.argv) > 1 else "completions")):
        print(path)
