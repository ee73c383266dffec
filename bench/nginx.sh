# Sourced by run.sh and profile.sh: nginx as the reference reverse proxy.
# nginx_conf DIR MOCK_PORT PORT [MASTER]: one worker (the gateway gets one core too), upstream keepalive, no
# buffering (streams pass through as they come), no access log (like the gateway with its call log off).
# MASTER=off runs the worker alone in the started process (profile.sh profiles that process); DIR/logs must
# exist.
nginx_conf() {
  local dir=$1 mock_port=$2 port=$3 master=${4:-on}
  cat <<CONF
worker_processes 1;
master_process $master;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  keepalive_requests 1000000;
  upstream mock {
    server 127.0.0.1:$mock_port;
    keepalive 128;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
CONF
}
