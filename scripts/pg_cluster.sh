#!/usr/bin/env bash
# A throwaway PostgreSQL cluster that a test run owns: its own data directory
# and port on 127.0.0.1, so stopping, hanging or restarting it harms nothing else.
#
#   pg_cluster.sh start DIR PORT   initdb into DIR if empty (trust auth, except
#                                  the role mingus_h4_auth), start on PORT
#   pg_cluster.sh stop DIR         fast shutdown (no error if it is not running)
#   pg_cluster.sh restart DIR      stop, then start on the same port
#   pg_cluster.sh pid DIR          the postmaster's pid (for kill -STOP / -CONT)
#   pg_cluster.sh destroy DIR      stop, then delete DIR
#   pg_cluster.sh standby DIR PORT PRIMARY_PORT
#                                  a streaming standby of the cluster on
#                                  127.0.0.1:PRIMARY_PORT (pg_basebackup -R), started on PORT
#   pg_cluster.sh promote DIR      promote a standby; returns once it takes writes
#
# With PG_CLUSTER_LISTEN=ADDR, start listens on ADDR instead of 127.0.0.1 (a new
# cluster also trusts ADDR's /24), and with PG_CLUSTER_NETNS=NAME the server
# runs inside that network namespace; restart keeps both.
#
# PostgreSQL refuses to run as root, so as root the cluster belongs to the
# "postgres" user. The server binaries are found through pg_config or Debian's
# /usr/lib/postgresql/<version>/bin.
set -euo pipefail

bindir() {
    local found
    for found in /usr/lib/postgresql/*/bin; do
        [ -x "$found/initdb" ] && { echo "$found"; return; }
    done
    if command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then
        pg_config --bindir
        return
    fi
    echo "pg_cluster.sh: no initdb found (install the PostgreSQL server package)" >&2
    exit 2
}

as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

if [ "${1:-}" = as-owner ]; then  # internal: run a command as the cluster's owner
    shift
    as_owner "$@"
    exit
fi

BIN="$(bindir)"
# The role tests/scopes/test_pg_faults.py logs in as with a right and a wrong password.
PASSWORD_ROLE=mingus_h4_auth
command="${1:-}"
dir="${2:-}"
[ -n "$command" ] && [ -n "$dir" ] || { sed -n '4,19p' "$0" >&2; exit 2; }

case "$command" in
    start)
        port="${3:?pg_cluster.sh start DIR PORT}"
        listen="${PG_CLUSTER_LISTEN:-127.0.0.1}"
        netns="${PG_CLUSTER_NETNS:-}"
        if [ ! -s "$dir/PG_VERSION" ]; then
            mkdir -p "$dir"
            [ "$(id -u)" = 0 ] && chown postgres: "$dir"
            as_owner "$BIN/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 \
                --no-sync >"$dir.initdb.log" 2>&1 \
                || { cat "$dir.initdb.log" >&2; exit 1; }
            # One role must give its password, so that the fault suite can
            # prove a wrong one is refused; every other role is trusted.
            # pg_hba.conf takes the first matching line, so this one goes first.
            sed -i "1i host all $PASSWORD_ROLE 127.0.0.1/32 scram-sha-256" "$dir/pg_hba.conf"
            if [ "$listen" != 127.0.0.1 ]; then
                echo "host all all ${listen%.*}.0/24 trust" >>"$dir/pg_hba.conf"
            fi
        fi
        echo "$port" >"$dir.port"
        echo "$listen" >"$dir.listen"
        echo "$netns" >"$dir.netns"
        # The postmaster inherits the network namespace of the pg_ctl that starts it.
        in_netns=()
        [ -n "$netns" ] && in_netns=(ip netns exec "$netns")
        "${in_netns[@]}" bash "$0" as-owner \
            "$BIN/pg_ctl" -D "$dir" -w -t 60 -l "$dir/server.log" start -o \
            "-p $port -c listen_addresses=$listen -k $dir -c fsync=off \
             -c max_connections=200 -c deadlock_timeout=200ms" >/dev/null
        ;;
    stop)
        if [ -s "$dir/postmaster.pid" ]; then
            as_owner "$BIN/pg_ctl" -D "$dir" -w -t 60 -m fast stop >/dev/null || true
        fi
        ;;
    restart)
        bash "$0" stop "$dir"
        PG_CLUSTER_LISTEN="$(cat "$dir.listen" 2>/dev/null || echo 127.0.0.1)" \
            PG_CLUSTER_NETNS="$(cat "$dir.netns" 2>/dev/null || true)" \
            bash "$0" start "$dir" "$(cat "$dir.port")"
        ;;
    standby)
        port="${3:?pg_cluster.sh standby DIR PORT PRIMARY_PORT}"
        primary="${4:?pg_cluster.sh standby DIR PORT PRIMARY_PORT}"
        mkdir -p "$dir"
        chmod 700 "$dir"
        [ "$(id -u)" = 0 ] && chown postgres: "$dir"
        # -R writes standby.signal and primary_conninfo; the primary's socket
        # file, kept in its data directory, is skipped with a warning.
        as_owner "$BIN/pg_basebackup" -R -X stream -D "$dir" -h 127.0.0.1 -p "$primary" \
            -U postgres >"$dir.basebackup.log" 2>&1 \
            || { cat "$dir.basebackup.log" >&2; exit 1; }
        PG_CLUSTER_LISTEN=127.0.0.1 PG_CLUSTER_NETNS= bash "$0" start "$dir" "$port"
        ;;
    promote)
        as_owner "$BIN/pg_ctl" -D "$dir" -w -t 60 promote >/dev/null
        ;;
    pid)
        head -1 "$dir/postmaster.pid"
        ;;
    destroy)
        bash "$0" stop "$dir"
        rm -rf "$dir" "$dir.port" "$dir.listen" "$dir.netns" "$dir.initdb.log" \
            "$dir.basebackup.log"
        ;;
    *)
        sed -n '4,19p' "$0" >&2
        exit 2
        ;;
esac
