_rungefit_completion() {
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
                   _RUNGEFIT_COMPLETE=complete_bash $1 ) )
    if [[ ${COMPREPLY[*]} == *//rungefit-file-names ]]; then
        COMPREPLY=()
        compopt -o default
    elif [[ $current == *:* && $COMP_WORDBREAKS == *:* ]]; then
        COMPREPLY=( "${COMPREPLY[@]#"${current%"${current##*:}"}"}" )
    fi
    return 0
}

complete -F _rungefit_completion rungefit
