# Sourced by run.sh and ab.sh: squid as a benchmark's forward proxy.
# squid_conf DIR PORT N: a config listening on 127.0.0.1 … 127.0.0.N, one port. No cache (memory or disk),
# persistent connections to clients and servers, loopback clients only, no access log. Started as root, squid
# drops to its own user (cache_effective_user), which then needs to reach DIR (see squid_prepare).
squid_conf() {
  local dir=$1 port=$2 n=$3 i
  for i in $(seq 1 "$n"); do echo "http_port 127.0.0.$i:$port"; done
  cat <<CONF
http_access allow localhost
http_access deny all
cache deny all
cache_mem 0 MB
client_persistent_connections on
server_persistent_connections on
via off
forwarded_for delete
pinger_enable off
access_log none
cache_store_log none
cache_log $dir/cache.log
pid_filename $dir/squid.pid
coredump_dir $dir
shutdown_lifetime 0 seconds
CONF
  if [ "$(id -u)" -eq 0 ]; then echo "cache_effective_user proxy"; fi
}

# squid_prepare WORK DIR: lets squid's user into DIR (under WORK) when we run as root.
squid_prepare() {
  if [ "$(id -u)" -eq 0 ]; then chmod o+x "$1"; chown proxy "$2"; fi
}
