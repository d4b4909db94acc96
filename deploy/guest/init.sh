#!/bin/busybox sh
# vmroc guest /init: load virtio drivers, join the lab network, run the workload and
# print one status line per second on the serial console. Format: docs/guest.md.
/bin/busybox mkdir -p /proc /sys /dev /tmp /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev

arg() { # value of vmroc.$1= on the kernel command line
    for w in $(cat /proc/cmdline); do
        case "$w" in "vmroc.$1="*) echo "${w#*=}"; return;; esac
    done
}
NAME=$(arg name); IP=$(arg ip); PEER=$(arg peer)
WORKLOAD=$(arg workload); CLUSTER=$(arg cluster)  # cluster: g1=10.77.0.11,g2=10.77.0.12,...
# bench/bench_overhead.py: vmroc.busy=1 runs busy_worker instead of cpu_worker, work that
# never rests, so its rate (cpu_ops) measures what sampling takes from the guest
BUSY=$(arg busy)

for m in $(cat /lib/modules/load-order); do
    insmod "/lib/modules/$m.ko" 2>/dev/null || echo "vmroc-init: insmod $m failed"
done

if [ "$(arg probe)" = 1 ]; then
    echo "VMROC-PROBE-OK"
    poweroff -f
fi

hostname "${NAME:-guest}"
ip link set lo up
if [ -n "$IP" ]; then
    ip addr add "$IP/24" dev eth0
    ip link set eth0 up
fi
httpd -h /www -p 80

# uptime in centiseconds, into variable $1 (no fork)
now_cs() { read -r _up _ < /proc/uptime; eval "$1=\${_up%.*}\${_up#*.}"; }

http_client() { # GET the peer's page once a second
    ok=0; err=0
    while :; do
        now_cs t0
        if timeout 3 wget -q -O /dev/null "http://$PEER/index.html" 2>/dev/null; then
            ok=$((ok + 1))
        else
            err=$((err + 1))
        fi
        now_cs t1
        echo "$ok $err $(((t1 - t0) * 10))" > /tmp/http
        sleep 1
    done
}

# Canaries: data the guest wrote once and checks every second, so a corruption the host
# makes shows from inside. The disk canary is the 4 KiB block right after the worker's
# 16 MiB (byte offset 16777216); the memory canary is a 4 KiB tmpfs file, a page-cache
# page in RAM beginning with "vmroc-canary name=NAME boot=BOOT".
canary_page() { # 4096 bytes: the marker line, then dots
    cp_head="vmroc-canary name=$NAME boot=$1"
    printf '%s\n' "$cp_head"; cp_n=$((${#cp_head} + 1))
    while [ $((cp_n + 64)) -le 4096 ]; do
        printf '................................................................'
        cp_n=$((cp_n + 64))
    done
    while [ $cp_n -lt 4096 ]; do printf .; cp_n=$((cp_n + 1)); done
}

disk_worker() { # write 64 KiB then read it back, direct I/O, once a second
    ok=0; err=0; i=0; bad=0
    canary_page disk > /tmp/disk.canary
    dd if=/tmp/disk.canary of=/dev/vda bs=4096 count=1 seek=4096 oflag=direct conv=fsync 2>/dev/null
    want=$(md5sum < /tmp/disk.canary); rm -f /tmp/disk.canary
    while :; do
        off=$(((i % 256) * 16)); i=$((i + 1))
        if dd if=/dev/urandom of=/dev/vda bs=4096 count=16 seek=$off oflag=direct conv=fsync 2>/dev/null &&
           dd if=/dev/vda of=/dev/null bs=4096 count=16 skip=$off iflag=direct 2>/dev/null; then
            ok=$((ok + 1))
        else
            err=$((err + 1))
        fi
        if dd if=/dev/vda of=/tmp/disk.canary bs=4096 count=1 skip=4096 iflag=direct 2>/dev/null &&
           [ "$(md5sum < /tmp/disk.canary)" != "$want" ]; then
            bad=$((bad + 1))  # read fine, but other bytes: a failed read is disk_err's
        fi
        echo "$ok $err $bad" > /tmp/disk
        sleep 1
    done
}

cpu_worker() { # a fixed chunk of work, then a short rest: ops/s falls when the CPU is starved
    n=0
    while :; do
        j=0
        while [ $j -lt 200 ]; do j=$((j + 1)); done
        n=$((n + 1))
        echo "$n" > /tmp/cpu
        usleep 200000
    done
}

busy_worker() { # vmroc.busy=1, instead of cpu_worker: a fixed unit of CPU work (shell
    # arithmetic) and memory work (a 24 MiB file in RAM copied out), again and again
    dd if=/dev/urandom of=/tmp/mem.big bs=1M count=24 2>/dev/null
    n=0
    while :; do
        j=0
        while [ $j -lt 1000 ]; do j=$((j + 1)); done
        dd if=/tmp/mem.big of=/dev/null bs=1M 2>/dev/null
        n=$((n + 1))
        echo "$n" > /tmp/cpu
    done
}

# -- etcd workload: a real etcd cluster over the lab guests, and a client per guest ------
etcd_post() { # URL PATH JSON: POST to etcd's JSON gateway; the reply on stdout
    timeout 3 wget -q -O - --post-data "$3" "$1$2" 2>/dev/null
}

json_str() { # KEY: the value of "KEY":"..." in the JSON on stdin
    sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p"
}

etcd_join() { # print the state this guest's member starts in: `new` if no peer answers
               # (the cluster is being made), else `existing`, after replacing a member
               # of this name that ran before and lost its data with the guest's RAM
    for m in $(echo "$CLUSTER" | tr , ' '); do
        [ "${m%%=*}" = "$NAME" ] && continue
        url="http://${m#*=}:2379"
        list=$(etcd_post "$url" /v3/cluster/member/list '{}') || continue
        tries=0
        while [ $tries -lt 60 ]; do
            tries=$((tries + 1))
            old=$(echo "$list" | grep -o "\"ID\":\"[0-9]*\",\"name\":\"$NAME\"" | json_str ID)
            if [ -n "$old" ]; then
                etcd_post "$url" /v3/cluster/member/remove "{\"ID\":\"$old\"}" > /dev/null &&
                    echo "vmroc-guest: etcd member $NAME ($old) lost its data; replacing it" >&2
            elif echo "$list" | grep -q "\"peerURLs\":\[\"http://$IP:2380\"\]"; then
                echo existing  # listed, not started: join it
                return
            else
                etcd_post "$url" /v3/cluster/member/add "{\"peerURLs\":[\"http://$IP:2380\"]}" > /dev/null
            fi
            usleep 500000
            list=$(etcd_post "$url" /v3/cluster/member/list '{}')
        done
        echo "vmroc-guest: etcd member $NAME could not rejoin through ${m%%=*}" >&2
        echo existing
        return
    done
    echo new
}

etcd_log() { # keep the member's log in /tmp/etcd.log; copy what bears on reads, leaders
              # and failures into the kernel log (so onto the console and into samples).
              # awk, not a shell loop: the shell reads a pipe one byte per syscall
    awk -v name="$NAME" '
        { print >> "/tmp/etcd.log" }
        /ReadIndex|read index|leader changed|"level":"(error|panic|fatal)"/ {
            m = $0
            if (match($0, /"msg":"[^"]*"/)) m = substr($0, RSTART + 7, RLENGTH - 8)
            printf "vmroc-guest: etcd %s: %s\n", name, substr(m, 1, 200) > "/dev/kmsg"
            fflush("/dev/kmsg")
        }'
}

etcd_member() { # run this guest's member, and run it again whenever it exits: with its
                 # data when the data is still there (the process died, e.g. killed out
                 # of memory; raft's log and vote must survive that), else rejoining as a
                 # member that lost its data (the guest's RAM went with a reboot or crash).
                 # Data that fails 5 starts in a row (each within 30 s) is dropped too.
    initial=""
    for m in $(echo "$CLUSTER" | tr , ' '); do initial="$initial,${m%%=*}=http://${m#*=}:2380"; done
    data=${ETCD_DATA:-/var/etcd}; fails=0
    while :; do
        if [ -d "$data/member" ] && [ $fails -lt 5 ]; then
            state=existing
        else
            [ $fails -ge 5 ] && echo "vmroc-guest: etcd member $NAME failed $fails starts with its data; dropping it"
            rm -rf "$data"; mkdir -p "$data"
            state=$(etcd_join); fails=0
        fi
        started=$(date +%s)
        etcd --name "$NAME" --data-dir "$data" --initial-cluster "${initial#,}" \
            --initial-cluster-state "$state" --initial-cluster-token vmroc \
            --listen-peer-urls "http://$IP:2380" --initial-advertise-peer-urls "http://$IP:2380" \
            --listen-client-urls "http://$IP:2379,http://127.0.0.1:2379" \
            --advertise-client-urls "http://$IP:2379" \
            --heartbeat-interval 250 --election-timeout 2500 --pre-vote \
            --logger zap --log-outputs stderr --log-level warn 2>&1 | etcd_log
        echo "vmroc-guest: etcd member $NAME ($state) exited: $(tail -n 1 /tmp/etcd.log | cut -c1-200)"
        if [ $(($(date +%s) - started)) -lt 30 ]; then fails=$((fails + 1)); else fails=0; fi
        sleep 3
    done
}

etcd_client() { # write its own key, read it back (linearizable), ask the member who leads
    url=http://127.0.0.1:2379; key=$(printf /vmroc/%s "$NAME" | base64)
    wok=0; werr=0; rok=0; rerr=0; back=0; wlast=0; acked=0; arev=0; seen=0; eup=0; lead=0; term=0
    leader=""; ids=""
    # continue the key's sequence after a reboot, so its values only ever grow
    tries=0
    until out=$(etcd_post $url /v3/kv/range "{\"key\":\"$key\"}"); do
        tries=$((tries + 1)); [ $tries -ge 90 ] && break; sleep 1
    done
    seq=$(echo "$out" | json_str value | base64 -d); seq=${seq:-0}
    while :; do
        seq=$((seq + 1))
        if out=$(etcd_post $url /v3/kv/put "{\"key\":\"$key\",\"value\":\"$(printf %s $seq | base64)\"}"); then
            # the store revision this write made: the host finds it again in the history
            wok=$((wok + 1)); acked=$seq; arev=$(echo "$out" | json_str revision)
            read -r wlast _ < /proc/uptime
        else
            werr=$((werr + 1))
        fi
        if out=$(etcd_post $url /v3/kv/range "{\"key\":\"$key\"}"); then
            rok=$((rok + 1))
            v=$(echo "$out" | json_str value | base64 -d); v=${v:-0}
            # history check: an acknowledged write, or a value already read, is never lost
            if [ "$v" -lt "$acked" ] || [ "$v" -lt "$seen" ]; then back=$((back + 1)); fi
            [ "$v" -gt "$seen" ] && seen=$v
        else
            rerr=$((rerr + 1))
        fi
        if out=$(etcd_post $url /v3/maintenance/status '{}'); then
            eup=1; term=$(echo "$out" | json_str raftTerm); id=$(echo "$out" | json_str leader)
            if [ "$id" != "$leader" ]; then  # a new leader: find its guest in the member list
                leader=$id; lead=0
                ids=$(etcd_post $url /v3/cluster/member/list '{}' | grep -o "\"ID\":\"$id\",\"name\":\"g[0-9]*\"")
                [ -n "$ids" ] && lead=${ids##*\"g} && lead=${lead%\"}
                [ "$lead" = 0 ] && leader=""
            fi
        else
            eup=0; lead=0; leader=""
        fi
        echo "$eup $lead ${term:-0} $wok $werr $wlast $acked $rok $rerr $back ${arev:-0}" > /tmp/etcd
        usleep 200000
    done
}

echo "0 0 0" > /tmp/http; echo "0 0 0" > /tmp/disk; echo 0 > /tmp/cpu; echo "0 0 0 0 0 0 0 0 0 0 0" > /tmp/etcd
if [ "$WORKLOAD" = etcd ]; then etcd_member & etcd_client & fi
[ -n "$PEER" ] && http_client &
[ -b /dev/vda ] && disk_worker &
if [ "$BUSY" = 1 ]; then busy_worker & else cpu_worker & fi

# the status loop runs as PID 1 and never exits
read -r boot _ < /proc/uptime
canary_page "$boot" > /tmp/mem.canary; mem_want=$(md5sum < /tmp/mem.canary); mem_bad=0
http="0 0 0"; disk="0 0 0"; cpu=0; etcd="0 0 0 0 0 0 0 0 0 0 0"; beat=0
while :; do
    beat=$((beat + 1))
    # a kernel log line written from inside, for checks of the log read from RAM
    [ $((beat % 5)) = 0 ] && echo "vmroc-guest: heartbeat $((beat / 5)) name=$NAME" > /dev/kmsg
    read -r up _ < /proc/uptime
    read -r l1 l5 l15 rt _ < /proc/loadavg
    while read -r k v _; do [ "$k" = MemFree: ] && { memfree=$v; break; }; done < /proc/meminfo
    set -- /proc/[0-9]*; tasks=$#
    line="VMROC1 name=$NAME up=$up load1=$l1 load5=$l5 load15=$l15 runnable=${rt%/*} memfree_kb=$memfree tasks=$tasks"
    while read -r _ _ dev rd _ rs _ wr _ ws _ inflight ioms _; do
        case "$dev" in vd?) line="$line ${dev}_rd=$rd ${dev}_rsec=$rs ${dev}_wr=$wr ${dev}_wsec=$ws ${dev}_inflight=$inflight ${dev}_ioms=$ioms";; esac
    done < /proc/diskstats
    for d in /sys/class/net/eth*; do
        [ -d "$d" ] || continue
        n=${d##*/}; s=$d/statistics
        read -r rxp < $s/rx_packets; read -r txp < $s/tx_packets
        read -r rxb < $s/rx_bytes; read -r txb < $s/tx_bytes
        read -r rxd < $s/rx_dropped; read -r txd < $s/tx_dropped
        read -r rxe < $s/rx_errors; read -r txe < $s/tx_errors
        line="$line ${n}_rxp=$rxp ${n}_txp=$txp ${n}_rxb=$rxb ${n}_txb=$txb ${n}_rxdrop=$rxd ${n}_txdrop=$txd ${n}_rxerr=$rxe ${n}_txerr=$txe"
    done
    read -r v < /tmp/http 2>/dev/null && [ -n "$v" ] && http=$v
    read -r v < /tmp/disk 2>/dev/null && [ -n "$v" ] && disk=$v
    read -r v < /tmp/cpu 2>/dev/null && [ -n "$v" ] && cpu=$v
    if [ "$WORKLOAD" = etcd ]; then
        read -r v < /tmp/etcd 2>/dev/null && [ -n "$v" ] && etcd=$v
        set -- $etcd
        line="$line etcd_up=$1 etcd_lead=$2 etcd_term=$3 etcd_wok=$4 etcd_werr=$5 etcd_wlast=$6"
        line="$line etcd_acked=$7 etcd_rok=$8 etcd_rerr=$9 etcd_back=${10} etcd_arev=${11}"
    fi
    set -- $http; line="$line http_ok=$1 http_err=$2 http_ms=$3"
    [ "$(md5sum < /tmp/mem.canary)" = "$mem_want" ] || mem_bad=$((mem_bad + 1))
    set -- $disk; line="$line disk_ok=$1 disk_err=$2 disk_bad=$3 mem_bad=$mem_bad cpu_ops=$cpu"
    echo "$line"
    sleep 1
done
