#!/bin/sh
# The checks of `cargo xtask vm-test` (xtask/src/vm_test.rs), run by
# cradle-init as PID 1 of a cgroup v2 guest whose / is the initramfs. One
# line per check, `PASS name` or `FAIL name: detail`, each printed whole by
# one echo (the xtask reads them from the serial console); then the line
# `cradle-vm-test: done`, then the guest powers off.

export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
IMG=/images/default.tar
CG=/sys/fs/cgroup
# A systemd host's layout: processes only in leaves, a login session's
# shell in a scope, and user@1000.service delegated to its user.
SLICE=$CG/user.slice/user-0.slice
SESSION=$SLICE/session-1.scope
USER_SERVICE=$CG/user.slice/user-1000.slice/user@1000.service
USER_SCOPE=$USER_SERVICE/app.slice/check.scope
CONTROLLERS="+cpu +memory +pids +io"

pass() { echo "PASS $1"; }
fail() {
    name=$1
    shift
    echo "FAIL $name: $(echo "$*" | tr '\n' ' ' | cut -c1-700)"
}
oneline() { tr '\0\n' '  ' <"$1" | cut -c1-400; }

# launch ARGS…: `launcher run ARGS…` as root; its stdout in /tmp/out, its
# stderr in /tmp/err, its status in $rc.
launch() {
    launcher run "$@" >/tmp/out 2>/tmp/err
    rc=$?
}
# What the last run did, for a FAIL line.
detail() { echo "exit $rc; stdout: $(oneline /tmp/out); stderr: $(oneline /tmp/err)"; }
# as_user ARGS…: `launch ARGS…` as uid 1000, from a leaf of its delegated
# subtree. util-linux's setpriv by its path: busybox's shell runs its own
# applet, which lacks these options, for a bare `setpriv`.
as_user() {
    sh -c 'echo $$ >"$0/cgroup.procs" && exec /usr/bin/setpriv --reuid 1000 --regid 1000 --clear-groups \
        env HOME=/home/user XDG_RUNTIME_DIR=/run/user/1000 launcher run "$@"' \
        "$USER_SCOPE" "$@" >/tmp/out 2>/tmp/err
    rc=$?
}

setup_system() {
    [ -e /proc/self ] || mount -t proc proc /proc || return
    mount -t sysfs sysfs /sys &&
        mount -t devtmpfs devtmpfs /dev &&
        mkdir -p /dev/pts /dev/shm &&
        mount -t devpts devpts /dev/pts &&
        mount -t tmpfs tmpfs /dev/shm &&
        mount -t tmpfs tmpfs /tmp &&
        mount -t tmpfs tmpfs /run || return
    # Kernel messages (an OOM kill's report) would cut into the results.
    dmesg -n 1
    hostname cradle-vm
    ip link set lo up
    for m in $(cat /lib/modules/load-order); do
        insmod "/lib/modules/$m.ko" || return
    done
    mkdir -p /run/user/1000 && chown 1000:1000 /run/user/1000 /home/user
}

setup_cgroups() {
    mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 $CG || return
    mkdir -p $SESSION $USER_SCOPE || return
    for dir in $CG $CG/user.slice $SLICE $CG/user.slice/user-1000.slice; do
        echo "$CONTROLLERS" >$dir/cgroup.subtree_control || return
    done
    echo $$ >$SESSION/cgroup.procs || return
    # What systemd does for Delegate=yes: the unit's directory and these
    # three files belong to the user (cgroup-v2.rst, "Delegation").
    chown 1000:1000 $USER_SERVICE $USER_SERVICE/cgroup.procs \
        $USER_SERVICE/cgroup.threads $USER_SERVICE/cgroup.subtree_control || return
    # What the user's own systemd would make below it.
    chown -R 1000:1000 $USER_SERVICE/app.slice
}

check_default_init() {
    launch $IMG cat /proc/1/cmdline
    echo "info default-init: launcher stderr: $(oneline /tmp/err)"
    case "$rc $(oneline /tmp/out)" in
        "0 /sbin/cradle-init "*) pass default-init ;;
        *) fail default-init "PID 1 is not cradle-init: $(detail)" ;;
    esac
}

check_memory() {
    launch --memory 32m -v /probe:/probe:ro $IMG /probe alloc 200
    if [ $rc = 137 ] && grep -q 'out of memory' /tmp/err; then
        pass memory-oom
    else
        fail memory-oom "allocating 200 MiB under --memory 32m, want exit 137 and 'out of memory': $(detail)"
    fi
}

check_pids() {
    launch --pids-limit 10 -v /probe:/probe:ro $IMG /probe fork 100
    forked=$(sed -n 's/^forked=//p' /tmp/out)
    errno=$(sed -n 's/^fork_errno=//p' /tmp/out)
    if [ $rc = 0 ] && [ -n "$forked" ] && [ "$forked" -lt 10 ] && [ "$errno" = 11 ]; then
        pass pids-limit
    else
        fail pids-limit "forking 100 under --pids-limit 10, want fewer than 10 and EAGAIN (11): $(detail)"
    fi
}

check_cpus() {
    launch --cpus 0.5 $IMG cat /sys/fs/cgroup/cpu.max
    if [ $rc = 0 ] && [ "$(cat /tmp/out)" = "50000 100000" ]; then
        pass cpus
    else
        fail cpus "want cpu.max '50000 100000' inside: $(detail)"
    fi
}

# check_parent NAME PARENT DIR: with --cgroup-parent PARENT the container's
# cgroup is DIR/cradle-* (seen through the host's tree, mounted inside)
# and has the limit.
check_parent() {
    launch --cgroup-parent "$2" --memory 64m -v $CG:/host-cgroup:ro $IMG \
        sh -c "cat /host-cgroup/${3#$CG/}/cradle-*/memory.max"
    if [ $rc = 0 ] && [ "$(cat /tmp/out)" = 67108864 ]; then
        pass "$1"
    else
        fail "$1" "--cgroup-parent $2 --memory 64m, want $3/cradle-*/memory.max 67108864: $(detail)"
    fi
}

check_network_none() {
    launch --network none $IMG cat /proc/net/dev
    devs=$(sed 1,2d /tmp/out | cut -d: -f1 | tr -d ' ' | tr '\n' ' ')
    if [ $rc = 0 ] && [ "$devs" = "lo " ]; then
        pass network-none
    else
        fail network-none "want only lo: $(detail)"
    fi
}

check_network_host() {
    launch --network host $IMG cat /proc/net/dev
    want=$(sed 1,2d /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\n' ' ')
    devs=$(sed 1,2d /tmp/out | cut -d: -f1 | tr -d ' ' | sort | tr '\n' ' ')
    if [ $rc = 0 ] && [ "$devs" = "$want" ]; then
        pass network-host
    else
        fail network-host "want the guest's devices ($want): $(detail)"
    fi
}

# check_reach NAME PORT ARGS…: a probe on the guest serves PORT once; the
# container (ARGS… of launcher run) connects to it.
check_reach() {
    name=$1
    port=$2
    shift 2
    /probe serve "$port" 1 >/tmp/serve 2>&1 &
    server=$!
    launch -v /probe:/probe:ro "$@"
    kill $server 2>/dev/null
    wait $server 2>/dev/null
    if [ $rc = 0 ] && grep -q 'hello from cradle-vm' /tmp/out; then
        pass "$name"
    else
        fail "$name" "a TCP connection to the guest, want 'hello from cradle-vm': $(detail); server: $(oneline /tmp/serve)"
    fi
}

# check_rootless NAME ARGS…: uid 1000 runs with --memory 32m and ARGS…,
# and sees the limit in its cgroup.
check_rootless() {
    name=$1
    shift
    as_user --memory 32m "$@" $IMG cat /sys/fs/cgroup/memory.max
    if [ $rc = 0 ] && [ "$(cat /tmp/out)" = 33554432 ]; then
        pass "$name"
    else
        fail "$name" "uid 1000 with --memory 32m $*, want memory.max 33554432 inside: $(detail)"
    fi
}

# The image has no mknod: the guest's busybox, bound in, makes the node.
check_devices() {
    launch -v /bin/busybox:/busybox:ro $IMG sh -c '/busybox mknod /x b 7 0 && head -c1 /x'
    if [ $rc != 0 ] && grep -q 'Operation not permitted' /tmp/out /tmp/err; then
        pass devices
    else
        fail devices "opening a new node of /dev/loop0 (b 7 0) as root inside, want EPERM: $(detail)"
    fi
}

check_cleanup() {
    left=$(find $CG -type d -name 'cradle-*' | tr '\n' ' ')
    if [ -z "$left" ]; then
        pass cleanup
    else
        fail cleanup "cgroups left after every run ended: $left"
    fi
}

# `cargo xtask vm-test --bench`: a warm start of /bin/true with the static
# and the glibc launcher (release builds) and with crun, interleaved, one
# run of each in turn; `BENCH name median_us runs` per candidate. The
# probe reads the clock: busybox's date has no nanoseconds.
run_bench() {
    rounds=${BENCH_ROUNDS:-25}
    export CRADLE_ROOT=/tmp/bench-store
    mkdir -p /tmp/bundle && launcher-static export $IMG /tmp/bundle/rootfs >/tmp/err 2>&1 &&
        (cd /tmp/bundle && crun spec) >>/tmp/err 2>&1 &&
        sed -i 's/"terminal": true/"terminal": false/; s/"sh"/"\/bin\/true"/' /tmp/bundle/config.json ||
        { fail bench "preparing crun's bundle: $(oneline /tmp/err)"; return; }
    launcher-static run $IMG /bin/true >/tmp/err 2>&1 || { fail bench "warming: $(oneline /tmp/err)"; return; }
    i=0
    while [ $i -lt $rounds ]; do
        i=$((i + 1))
        for c in static glibc crun; do
            t0=$(/probe now)
            case $c in
                static) launcher-static run $IMG /bin/true ;;
                glibc) launcher-glibc run $IMG /bin/true ;;
                # / is the initramfs, where pivot_root fails: crun moves
                # and chroots with --no-pivot (the launcher does by itself).
                crun) crun run --no-pivot -b /tmp/bundle bench-$i ;;
            esac >/dev/null 2>/tmp/err-$c || { fail bench "$c: $(oneline /tmp/err-$c)"; return; }
            t1=$(/probe now)
            echo $((t1 - t0)) >>/tmp/times-$c
        done
    done
    for c in static glibc crun; do
        echo "BENCH $c $(sort -n /tmp/times-$c | sed -n "$((rounds / 2 + 1))p") $rounds"
    done
    pass bench
}

if ! setup_system; then
    fail setup "mounting, loading modules: see the console above"
elif ! setup_cgroups; then
    fail setup "laying out the cgroup v2 tree: see the console above"
elif [ "$1" = bench ]; then
    run_bench
else
    check_default_init
    check_memory
    check_pids
    check_cpus
    check_parent cgroup-parent-absolute /vm-abs $CG/vm-abs
    # Relative: beside the launcher's own cgroup, which holds the launcher.
    check_parent cgroup-parent-relative vm-rel $SLICE/vm-rel
    check_network_none
    check_network_host
    check_reach network-bridge 7001 --network bridge $IMG /probe connect 10.89.0.1 7001
    # The /30's other end is the container's address minus one.
    check_reach network-veth 7002 --network veth --hostname vm-veth $IMG sh -c \
        'a=$(grep -w vm-veth /etc/hosts | cut -f1); /probe connect ${a%.*}.$((${a##*.} - 1)) 7002'
    check_rootless rootless-default-parent
    check_rootless rootless-delegated-parent --cgroup-parent "/${USER_SERVICE#$CG/}/cradle"
    check_devices
    check_cleanup
fi
echo "cradle-vm-test: done"
sync
poweroff -f
