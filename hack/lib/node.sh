# shellcheck shell=bash
# shellcheck disable=SC2154 # state, node_ip, ... are set by hack/control-plane
# The node half of `hack/control-plane --node` (design.md §7); sourced by hack/control-plane,
# whose variables it uses (state, node_ip, node_dev, bridge, node_name, pod_cidr, svc_cidr,
# egress_chain, api_port, the *_BIN paths) and whose helpers (log, our_pid, stop_proc,
# random_token). Not a command of its own.
#
# Everything machine-wide is recorded under $state/record before it is changed, and
# node_down undoes exactly that: sysctls back to their recorded values, iptables chains
# that did not exist before deleted (with the rules jumping to them), our links and
# route deleted, the kubepods cgroups removed, every mount under $state unmounted, and the
# fixed host paths kubelet and CNI insist on removed only when they did not exist before.

node_sysctls=(kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes
  vm.overcommit_memory vm.panic_on_oom net.ipv4.ip_forward net.ipv6.conf.all.forwarding
  net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables
  net.bridge.bridge-nf-call-ip6tables net.netfilter.nf_conntrack_max
  net.netfilter.nf_conntrack_tcp_timeout_established
  net.netfilter.nf_conntrack_tcp_timeout_close_wait)
# Host paths kubelet, containerd or CNI create whatever their flags say.
node_host_paths=(/var/log/containers /var/log/pods /var/lib/kubelet /var/lib/cni /etc/cni
  /opt/cni /run/containerd /var/lib/containerd /var/run/netns /run/netns /etc/kubernetes)
ipt_tables=(filter nat mangle raw)

node_fail() { # $1 = message; tears everything down
  log "error: $*"
  local f
  for f in containerd kubelet kube-proxy kube-controller-manager kube-scheduler; do
    if [[ -f "$state/$f.log" ]]; then
      log "last lines of $state/$f.log:"
      tail -n 15 "$state/$f.log" >&2 || true
    fi
  done
  down >/dev/null 2>&1 || true
  exit 1
}

node_prereqs() {
  [[ $EUID -eq 0 ]] || { log "error: --node needs root (it runs kubelet and containerd)"; exit 1; }
  local missing=() c pkg
  for c in runc:runc umoci:umoci /usr/lib/cni/bridge:containernetworking-plugins \
           iptables:iptables conntrack:conntrack ip:iproute2 openssl:openssl; do
    pkg="${c#*:}"; c="${c%%:*}"
    if [[ "$c" == /* ]]; then [[ -x "$c" ]] || missing+=("$pkg")
    else command -v "$c" >/dev/null || missing+=("$pkg"); fi
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    log "installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } ||
      { log "error: apt-get install ${missing[*]} failed"; exit 1; }
  fi
  if ip link show "$node_dev" >/dev/null 2>&1; then
    log "error: $node_dev exists: another node cluster runs here (hack/control-plane --node down)"
    exit 1
  fi
}

# --- recording and undoing machine-wide state ----------------------------------------
ipt_chains() { # all chains as "family table chain"
  local fam t
  for fam in iptables ip6tables; do
    for t in "${ipt_tables[@]}"; do
      "$fam" -t "$t" -S 2>/dev/null | awk -v f="$fam" -v t="$t" '$1 == "-N" { print f, t, $2 }'
    done
  done
}

node_record() {
  local rec="$state/record" k v p d
  mkdir -p "$rec"
  : > "$rec/sysctl"
  for k in "${node_sysctls[@]}"; do
    if v="$(sysctl -n "$k" 2>/dev/null)"; then printf '%s=%s\n' "$k" "$v" >> "$rec/sysctl"; fi
  done
  ipt_chains > "$rec/iptables"
  : > "$rec/paths"
  for p in "${node_host_paths[@]}"; do [[ -e "$p" || -L "$p" ]] || echo "$p" >> "$rec/paths"; done
  : > "$rec/cgroups"
  for d in /sys/fs/cgroup/*/; do
    [[ -d "${d}kubepods" ]] || echo "${d}kubepods" >> "$rec/cgroups"
  done
  [[ -d /sys/fs/cgroup/kubepods ]] || echo /sys/fs/cgroup/kubepods >> "$rec/cgroups"
  ip link show "$bridge" >/dev/null 2>&1 || echo "$bridge" > "$rec/bridge"
}

node_host_setup() {
  node_record
  # The node's address: a device of its own, so nothing depends on (or exposes) the machine's
  # own interfaces; the service range routes there too, so a packet kube-proxy did not
  # rewrite dies on the machine.
  # (A bridge without ports: this kernel has no dummy device type.)
  ip link add "$node_dev" type bridge
  ip addr add "$node_ip/32" dev "$node_dev"
  ip link set "$node_dev" up
  ip route add "$svc_cidr" dev "$node_dev"
  # Pod traffic may reach pods, services and the node address, nothing else.
  local fam=iptables
  $fam -N "$egress_chain"
  $fam -A "$egress_chain" -s "$pod_cidr" -d "$pod_cidr" -j RETURN
  $fam -A "$egress_chain" -s "$pod_cidr" -d "$svc_cidr" -j RETURN
  $fam -A "$egress_chain" -s "$pod_cidr" -d "$node_ip/32" -j RETURN
  $fam -A "$egress_chain" -s "$pod_cidr" -j DROP
  $fam -I FORWARD 1 -j "$egress_chain"
  $fam -I INPUT 1 -j "$egress_chain"
  # (Pods get IPv4 only: the CNI range has no IPv6, so no IPv6 rule is needed.)
  # Service traffic between two pods of the one bridge must pass iptables (the reply's
  # un-DNAT); recorded above and restored by down.
  if [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]]; then
    sysctl -qw net.bridge.bridge-nf-call-iptables=1
  fi
}

ipt_cleanup() { # deletes chains not in the record, and the rules that jump to them
  local rec="$state/record/iptables" fam t c rule
  [[ -f "$rec" ]] || return 0
  local -A old=() new=()
  while read -r fam t c; do old["$fam $t $c"]=1; done < "$rec"
  while read -r fam t c; do
    [[ -n "${old["$fam $t $c"]:-}" ]] || new["$fam $t $c"]=1
  done < <(ipt_chains)
  local key
  for key in "${!new[@]}"; do
    read -r fam t c <<<"$key"
    # Rules in other chains that jump to this one.
    while IFS= read -r rule; do
      eval "$fam -t $t -D ${rule#-A }" 2>/dev/null || true
    done < <("$fam" -t "$t" -S 2>/dev/null | grep -E -- "^-A .* -j $c( |$)" || true)
    "$fam" -t "$t" -F "$c" 2>/dev/null || true
  done
  for key in "${!new[@]}"; do
    read -r fam t c <<<"$key"
    "$fam" -t "$t" -X "$c" 2>/dev/null || log "warning: could not delete $fam -t $t chain $c"
  done
}

kill_cgroup_procs() { # kills every process left in the kubepods cgroups
  local f pid
  while IFS= read -r f; do
    while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done < "$f" 2>/dev/null || true
  done < <(find /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods -name cgroup.procs 2>/dev/null)
}

unmount_under() { # $1 = directory: unmounts everything below it, deepest first
  local m
  for _ in 1 2 3; do
    local mounts=()
    while read -r m; do mounts+=("$m"); done < <(awk -v p="$1/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
    [[ ${#mounts[@]} -eq 0 ]] && return 0
    for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  done
}

node_down() {
  local start=$SECONDS
  stop_proc kube-proxy
  # kube-proxy's own chains (the rest go with ipt_cleanup below).
  if [[ -f "$state/kube-proxy.path" ]]; then
    "$(cat "$state/kube-proxy.path")" --cleanup >/dev/null 2>&1 || true
  fi
  stop_proc kubelet
  # Every container and sandbox, then containerd, then any shim it left.
  local ctr="" id pid
  [[ -f "$state/ctr.path" ]] && ctr="$(cat "$state/ctr.path")"
  if [[ -n "$ctr" ]] && our_pid containerd >/dev/null; then
    for id in $("$ctr" --address "$state/containerd/containerd.sock" -n k8s.io tasks ls -q 2>/dev/null); do
      "$ctr" --address "$state/containerd/containerd.sock" -n k8s.io tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
  fi
  kill_cgroup_procs
  stop_proc containerd
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $state/" 2>/dev/null || true); do
    if [[ "$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)" == *"$state/"* ]]; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  kill_cgroup_procs
  stop_proc kube-controller-manager
  stop_proc kube-scheduler
  sleep 0.2
  unmount_under "$state"
  # cgroups kubelet created (deepest first; empty by now).
  if [[ -f "$state/record/cgroups" ]]; then
    local cg
    while read -r cg; do
      if [[ -d "$cg" ]]; then find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
      [[ -d "$cg" ]] && log "warning: could not remove $cg"
    done < "$state/record/cgroups"
  fi
  ipt_cleanup
  if [[ -f "$state/record/bridge" ]]; then ip link del "$bridge" 2>/dev/null || true; fi
  ip route del "$svc_cidr" dev "$node_dev" 2>/dev/null || true
  ip link del "$node_dev" 2>/dev/null || true
  if [[ -f "$state/record/sysctl" ]]; then
    local kv
    while IFS= read -r kv; do
      [[ "$(sysctl -n "${kv%%=*}" 2>/dev/null)" == "${kv#*=}" ]] || sysctl -qw "$kv" 2>/dev/null ||
        log "warning: could not restore $kv"
    done < "$state/record/sysctl"
  fi
  if [[ -f "$state/record/paths" ]]; then
    local p
    while read -r p; do
      [[ -e "$p" || -L "$p" ]] || continue
      unmount_under "$p"
      rm -rf "$p"
    done < "$state/record/paths"
  fi
  log "node down in $((SECONDS - start)) s"
}

node_leftovers() { # machine-wide state of a node cluster whose state dir is gone
  if ip link show "$node_dev" >/dev/null 2>&1; then
    log "removing leftovers of an earlier node cluster ($node_dev, $bridge, $egress_chain)"
    ip route del "$svc_cidr" dev "$node_dev" 2>/dev/null || true
    ip link del "$node_dev" 2>/dev/null || true
    ip link del "$bridge" 2>/dev/null || true
    while iptables -D FORWARD -j "$egress_chain" 2>/dev/null; do :; done
    while iptables -D INPUT -j "$egress_chain" 2>/dev/null; do :; done
    if iptables -F "$egress_chain" 2>/dev/null; then iptables -X "$egress_chain" 2>/dev/null || true; fi
    ip6tables -X "$egress_chain" 2>/dev/null || true
  fi
}

# --- PKI and identities -------------------------------------------------------------
node_cert() { # $1 = name, $2 = subject, $3 = extensions (or "")
  local pki="$state/pki" ext="$state/pki/$1.ext"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$pki/$1.key" -subj "$2" -out "$pki/$1.csr" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=%s\n%s\n' \
    "${4:-serverAuth,clientAuth}" "$3" > "$ext"
  openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 2 -sha256 -extfile "$ext" -out "$pki/$1.crt" 2>/dev/null
}

node_kubeconfig() { # $1 = file, $2 = token
  (umask 077
   cat > "$1" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: node
  cluster:
    server: https://$node_ip:$api_port
    certificate-authority: $state/pki/ca.crt
users:
- name: u
  user:
    token: $2
contexts:
- name: node
  context: {cluster: node, user: u}
current-context: node
KUBECONFIG
  )
}

node_pki() {
  local pki="$state/pki"
  mkdir -p "$pki"
  chmod 700 "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$pki/ca.key" -out "$pki/ca.crt" \
    -days 2 -subj "/CN=origin-region-operator-node-ca" 2>/dev/null
  node_cert apiserver "/CN=kube-apiserver" \
    "subjectAltName=IP:10.96.0.1,IP:127.0.0.1,IP:$node_ip,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost" serverAuth
  node_cert kubelet "/CN=$node_name" "subjectAltName=IP:$node_ip,DNS:$node_name" serverAuth
  # The apiserver's client identity at the kubelet (logs, exec): an admin.
  node_cert apiserver-kubelet "/O=system:masters/CN=kube-apiserver-kubelet-client" "" clientAuth
  local who tok
  local file user group
  for who in "node|system:node:$node_name|system:nodes" \
             "kube-controller-manager|system:kube-controller-manager|" \
             "kube-scheduler|system:kube-scheduler|" "kube-proxy|system:kube-proxy|"; do
    IFS='|' read -r file user group <<<"$who"
    tok="$(random_token)"
    printf '%s,%s,%s,"%s"\n' "$tok" "$user" "$user" "$group" >> "$state/tokens.csv"
    node_kubeconfig "$state/$file.kubeconfig" "$tok"
  done
}

# --- the node -----------------------------------------------------------------------
node_start() { # $1 = name, rest = command
  local name="$1"; shift
  setsid nohup "$@" </dev/null >"$state/$name.log" 2>&1 &
  echo $! > "$state/$name.pid"
}

node_wait() { # $1 = what, $2 = timeout s, rest = check command
  local what="$1" timeout="$2" t0=$SECONDS p; shift 2
  until "$@" >/dev/null 2>&1; do
    for p in "${node_procs[@]}"; do
      [[ -f "$state/$p.pid" ]] || continue
      our_pid "$p" >/dev/null || node_fail "$p exited while waiting for $what"
    done
    (( SECONDS - t0 < timeout )) || node_fail "$what not reached in $timeout s"
    sleep 0.3
  done
}

node_configs() {
  mkdir -p "$state/cni/net.d" "$state/cni/ipam" "$state/containerd" "$state/kubelet" \
    "$state/pod-logs" "$state/flexvolume" "$state/runc"
  # No masquerade: pod traffic keeps its source address, so the egress chain sees it.
  cat > "$state/cni/net.d/10-origin-region-operator.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "origin-region-operator-node",
  "plugins": [
    {
      "type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$state/cni/ipam",
        "ranges": [[{"subnet": "$pod_cidr"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
CNI
  cat > "$state/containerd/config.toml" <<TOML
version = 3
root = "$state/containerd/root"
state = "$state/containerd/state"
[grpc]
  address = "$state/containerd/containerd.sock"
[ttrpc]
  address = "$state/containerd/containerd.sock.ttrpc"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = 'localhost/pause:node'
[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  # This host lacks CAP_SYS_RESOURCE: without it runc fails with "can't get final
  # child's PID from pipe: EOF" (design.md §7).
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '$(command -v runc)'
        Root = '$state/runc'
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['/usr/lib/cni']
    conf_dir = '$state/cni/net.d'
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
  stream_server_port = '0'
TOML
  # Pods get a resolv.conf whose only nameserver is their own loopback: no DNS answers.
  printf 'nameserver 127.0.0.1\noptions ndots:1 timeout:1 attempts:1\n' > "$state/resolv.conf"
  cat > "$state/kubelet.yaml" <<KUBELET
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
address: $node_ip
port: 20250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 20248
containerRuntimeEndpoint: unix://$state/containerd/containerd.sock
podLogsDir: $state/pod-logs
tlsCertFile: $state/pki/kubelet.crt
tlsPrivateKeyFile: $state/pki/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $state/pki/ca.crt}
authorization: {mode: Webhook}
resolvConf: $state/resolv.conf
failSwapOn: false
podCIDR: $pod_cidr
maxPods: 30
serializeImagePulls: false
evictionHard: {memory.available: 50Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
volumePluginDir: $state/flexvolume
KUBELET
  cat > "$state/kube-proxy.yaml" <<PROXY
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $state/kube-proxy.kubeconfig}
hostnameOverride: $node_name
bindAddress: $node_ip
healthzBindAddress: 127.0.0.1:20256
metricsBindAddress: 127.0.0.1:20249
clusterCIDR: $pod_cidr
nodePortAddresses: ["primary"]
# 0: kube-proxy writes no conntrack sysctls.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
PROXY
}

node_up() {
  local t0=$SECONDS
  echo "$KUBE_PROXY_BIN" > "$state/kube-proxy.path"
  echo "$CONTAINERD_BIN_DIR/ctr" > "$state/ctr.path"
  node_configs
  local ctr=("$CONTAINERD_BIN_DIR/ctr" --address "$state/containerd/containerd.sock" -n k8s.io)

  node_start containerd env PATH="$CONTAINERD_BIN_DIR:$PATH" \
    "$CONTAINERD_BIN_DIR/containerd" --config "$state/containerd/config.toml" --log-level warn
  node_wait containerd 60 "${ctr[@]}" version
  # The sandbox image, from tools/pause (a second).
  local tar
  tar="$("$repo/hack/image" --out "$state/images" --tag node pause "$PAUSE_BIN" | sed -n "s/^export PAUSE_IMAGE_TAR='\(.*\)'$/\1/p")"
  "${ctr[@]}" images import --base-name localhost/pause "$tar" >/dev/null || node_fail "ctr import of the pause image"

  local kcfg="$state/kube-controller-manager.kubeconfig"
  node_start kube-controller-manager "$KUBE_CONTROLLER_MANAGER_BIN" --kubeconfig "$kcfg" \
    --bind-address 127.0.0.1 --secure-port 20257 --leader-elect=false \
    --use-service-account-credentials --root-ca-file "$state/pki/ca.crt" \
    --service-account-private-key-file "$state/sa.key" \
    --controllers='*,-nodeipam,-cloud-node-lifecycle' --flex-volume-plugin-dir "$state/flexvolume" \
    --cluster-cidr "$pod_cidr" --service-cluster-ip-range "$svc_cidr" --profiling=false
  node_start kube-scheduler "$KUBE_SCHEDULER_BIN" --kubeconfig "$state/kube-scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 20259 --leader-elect=false --profiling=false
  node_start kubelet "$KUBELET_BIN" --config "$state/kubelet.yaml" \
    --kubeconfig "$state/node.kubeconfig" --root-dir "$state/kubelet" \
    --hostname-override "$node_name" --node-ip "$node_ip" --v=1
  local k=("$KUBECTL_BIN" --kubeconfig "$state/kubeconfig")
  node_wait "node $node_name Ready" 120 \
    "${k[@]}" wait --for=condition=Ready "node/$node_name" --timeout=2s
  node_start kube-proxy "$KUBE_PROXY_BIN" --config "$state/kube-proxy.yaml" --v=1
  node_wait "kube-proxy healthy" 60 curl -fsS http://127.0.0.1:20256/healthz
  # kube-proxy and kubelet insert their jumps first in INPUT/FORWARD: put ours back on top,
  # so no ACCEPT of theirs comes before the egress check (they only re-add missing rules).
  local c
  for c in FORWARD INPUT; do
    iptables -D "$c" -j "$egress_chain"
    iptables -I "$c" 1 -j "$egress_chain"
  done
  node_wait "the default ServiceAccount" 60 "${k[@]}" -n default get serviceaccount default
  log "node $node_name Ready in $((SECONDS - t0)) s (containerd, kubelet, kube-proxy, controller-manager, scheduler)"
}
