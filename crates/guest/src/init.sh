#!/bin/sh
# Ferry test guest /init (built into the initramfs by `ferry guest build`).
# Kernel command line:
#   ferry.ip=ADDR/PREFIX   static address on eth0
#   ferry.gw=ADDR          default route
#   ferry.run=NAME:ARG:..  start workload NAME (repeatable), see ferry-workload
/bin/busybox mkdir -p /proc /sys /dev /tmp /run
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
/bin/busybox --install -s /bin
export PATH=/bin:/sbin

for m in $(cat /etc/ferry-modules); do
    insmod "/lib/modules/ferry/$m" 2>/dev/null || echo "FERRY-GUEST module $m failed to load"
done

IP= GW= RUNS=
for w in $(cat /proc/cmdline); do
    case "$w" in
        ferry.ip=*) IP=${w#ferry.ip=} ;;
        ferry.gw=*) GW=${w#ferry.gw=} ;;
        ferry.run=*) RUNS="$RUNS ${w#ferry.run=}" ;;
    esac
done

ip link set lo up
if [ -n "$IP" ]; then
    # Wait briefly for the virtio NIC to appear.
    n=0
    while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 50 ]; do usleep 20000; n=$((n + 1)); done
    ip link set eth0 up
    ip addr add "$IP" dev eth0 || echo "FERRY-GUEST cannot set address $IP"
    [ -n "$GW" ] && ip route add default via "$GW"
fi

ferry-workload powerbutton </dev/null >/dev/console 2>&1 &
# Ready means a power-off request is heard: wait (at most 5 s) until the
# watcher has its input devices open.
n=0
while [ ! -e /run/ferry-powerbutton.ready ] && [ $n -lt 250 ]; do usleep 20000; n=$((n + 1)); done

echo "FERRY-GUEST-READY $(ferry-workload sysinfo) kernel=$(uname -r) ip=${IP:-none}"

for r in $RUNS; do
    (
        # shellcheck disable=SC2046
        ferry-workload $(echo "$r" | tr ':' ' ')
        echo "FERRY-GUEST workload $r exited status=$?"
    ) </dev/null >/dev/console 2>&1 &
done

# An interactive shell on the serial console, restarted if it exits.
while true; do
    setsid cttyhack sh
done
