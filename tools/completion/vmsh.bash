# bash completion for vmsh (installed by `make install`)
_vmsh_vms()
{
	# PIDs and names of the running VMs this user may see
	vmsh list --json 2>/dev/null |
		sed -n 's/^ *"pid": *\([0-9][0-9]*\).*/\1/p; s/^ *"name": *"\([^"]*\)".*/\1/p'
}

_vmsh()
{
	local cur prev cmd i
	cur=${COMP_WORDS[COMP_CWORD]}
	prev=${COMP_WORDS[COMP_CWORD - 1]}
	cmd=
	for ((i = 1; i < COMP_CWORD; i++)); do
		case ${COMP_WORDS[i]} in
		-*) ;;
		*) cmd=${COMP_WORDS[i]}; break ;;
		esac
	done
	if [[ -z $cmd ]]; then
		COMPREPLY=($(compgen -W "list inspect library serve attach image coredump help -v -q --help --version" -- "$cur"))
		return
	fi
	case $prev in
	-f | --file | --console-socket) COMPREPLY=($(compgen -f -- "$cur")); return ;;
	--timeout | --vm-fd | --target | --cycles | --id | --size) return ;;
	esac
	local opts
	case $cmd in
	list) opts="--json" ;;
	inspect) opts="--json --vm-fd --symbol" ;;
	library) opts="--cycles --timeout --vm-fd" ;;
	serve) opts="--ro --id --queues --poll-us --no-console --console-socket --timeout --vm-fd" ;;
	attach) opts="--file --rw --guest-root --pty --pipe --target --escape --timeout --vm-fd" ;;
	coredump) opts="--snapshot --stop --live --force --vm-fd" ;;
	image) opts="build --size --force" ;;
	help)
		[[ $COMP_CWORD -eq $((i + 1)) ]] && COMPREPLY=($(compgen -W "list inspect library serve attach image coredump" -- "$cur"))
		return ;;
	esac
	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$opts --help" -- "$cur"))
	elif [[ $cmd != list && $cmd != image ]]; then
		COMPREPLY=($(compgen -W "$(_vmsh_vms)" -- "$cur"))
	fi
}
complete -F _vmsh vmsh
