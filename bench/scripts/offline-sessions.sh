#!/usr/bin/env bash
# Session replay from a file at top speed: records 1000 short HTTP sessions on the lab mirror,
# replays them with `xdpcopy -i FILE --topspeed` through xdpcopy-intercept and times until the
# test nginx has logged all of them. Run from the repository root after a release build, as root.
set -e
L=target/release/xdpcopy-lab
$L up --tag ss1 >/dev/null
ip netns exec xdpc-ss1-copier tcpdump -i cin --immediate-mode -U -w /tmp/sess.pcap tcp port 80 2>/dev/null &
TD=$!
sleep 1
for i in $(seq 1 1000); do echo "url = \"http://10.201.1.2/s/$i\""; done > /tmp/urls.txt
# 1000 short connections (curl -K with --no-keepalive opens one per URL)
ip netns exec xdpc-ss1-client curl -s -H 'Connection: close' -K /tmp/urls.txt -o /dev/null -o /dev/null >/dev/null 2>&1 || true
sleep 1; kill -INT $TD; sleep 1
echo "online: $(grep -c ' /s/' /tmp/xdpc-ss1/online-access.log)"
ip netns exec xdpc-ss1-assist target/release/xdpcopy-intercept -i a0 --target 10.201.2.2:8080 -q > /tmp/si.log 2>&1 &
sleep 0.5
start=$(date +%s.%N)
ip netns exec xdpc-ss1-copier target/release/xdpcopy -i /tmp/sess.pcap --topspeed -o cout -x 80-10.201.2.2:8080 -s 10.201.4.2 -q > /tmp/sc.log 2>&1 &
CP=$!
# time until the test log has every request
while [ "$(cat /tmp/xdpc-ss1/test-access.log 2>/dev/null | grep -c " /s/")" -lt "$(grep -c ' /s/' /tmp/xdpc-ss1/online-access.log)" ]; do
  sleep 0.05
  now=$(date +%s.%N); if [ $(echo "$now - $start > 60" | bc) = 1 ]; then break; fi
done
end=$(date +%s.%N)
echo "test: $(grep -c ' /s/' /tmp/xdpc-ss1/test-access.log) in $(echo "$end - $start" | bc) s"
wait $CP || true
grep -E "conns |feed_ms|feed_frames|resp_rst|released" /tmp/sc.log
pkill -INT -f "xdpcopy-intercept -i a0" || true
sleep 0.5
$L down --tag ss1 >/dev/null
