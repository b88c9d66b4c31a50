#!/usr/bin/env bash
# Runs INSIDE the brownfield host, once (sandbox/brownfield/up.sh): lays srv759970's hand-made state
# over the fresh Debian 13 from rootfs/, as the runbook describes it. Certificates, the HF token and
# the other tenants' passwords are generated here, never committed. Needs SEED (this folder's copy),
# TENANT_PASSWORD in the environment.
set -euo pipefail
cd "$SEED"
DOMAIN=srv759970.hstgr.cloud
cp -a rootfs/. /
chown -R root:root /etc/nginx /opt /etc/systemd/system/docker-autostart.service /var/www

# certbot's layout, self-signed stand-ins: archive/<name>/*1.pem, live/<name>/ links, renewal/<name>.conf
# (monitor: the monitoring page's name, which the real host gets from Let's Encrypt at its first deploy with
# monitoring; the twin reaches no ACME server)
for sub in whisper whisperx portal blog monitor; do
  d=$sub.$DOMAIN
  mkdir -p /etc/letsencrypt/archive/$d /etc/letsencrypt/live/$d /etc/letsencrypt/renewal
  openssl req -x509 -newkey rsa:2048 -nodes -days 90 -subj "/CN=$d" -addext "subjectAltName=DNS:$d" \
    -keyout /etc/letsencrypt/archive/$d/privkey1.pem -out /etc/letsencrypt/archive/$d/cert1.pem 2>/dev/null
  cp /etc/letsencrypt/archive/$d/cert1.pem /etc/letsencrypt/archive/$d/chain1.pem
  cp /etc/letsencrypt/archive/$d/cert1.pem /etc/letsencrypt/archive/$d/fullchain1.pem
  chmod 600 /etc/letsencrypt/archive/$d/privkey1.pem
  for f in cert chain fullchain privkey; do ln -sfn ../../archive/$d/${f}1.pem /etc/letsencrypt/live/$d/$f.pem; done
  cat > /etc/letsencrypt/renewal/$d.conf <<CONF
# renew_before_expiry = 30 days
version = 2.11.0
archive_dir = /etc/letsencrypt/archive/$d
cert = /etc/letsencrypt/live/$d/cert.pem
privkey = /etc/letsencrypt/live/$d/privkey.pem
chain = /etc/letsencrypt/live/$d/chain.pem
fullchain = /etc/letsencrypt/live/$d/fullchain.pem

[renewalparams]
authenticator = nginx
installer = nginx
key_type = rsa
CONF
done

# nginx: the hand-made whisper vhosts and two other tenants, the distribution's default site gone
rm -f /etc/nginx/sites-enabled/default
for site in blog portal whisper whisperx; do ln -sfn /etc/nginx/sites-available/$site /etc/nginx/sites-enabled/$site; done
# the shared htpasswd: the runbook's admin and another user (apr1 hashes, as `htpasswd` writes them)
# (passwords on stdin: one starting with "-" would read as an option)
admin_hash=$(printf '%s' "$TENANT_PASSWORD" | openssl passwd -apr1 -stdin)
alice_hash=$(head -c 18 /dev/urandom | base64 | openssl passwd -apr1 -stdin)
printf 'admin:%s\nalice:%s\n' "$admin_hash" "$alice_hash" > /etc/nginx/.htpasswd
chown root:www-data /etc/nginx/.htpasswd
chmod 640 /etc/nginx/.htpasswd
nginx -t
systemctl restart nginx

# /opt/whisperx/.env: the runbook's `nano .env`, with a generated fake token (never a real one)
echo "HF_TOKEN=hf_fake$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 30)" > /opt/whisperx/.env

# Docker: the images the hand-made host has (stand-ins), the runbook's containers
systemctl is-active --quiet docker || systemctl start docker
for _ in $(seq 1 30); do docker info >/dev/null 2>&1 && break; sleep 1; done
docker image inspect local/python:3.11-slim >/dev/null 2>&1 || docker load -q -i "$SEED/python-3.11-slim.tar"
docker build -q -t fedirz/faster-whisper-server:latest-cpu --build-arg NAME=faster-whisper --build-arg PORT=8000 standins >/dev/null
docker build -q -t whisperx-whisperx --build-arg NAME=whisperx --build-arg PORT=8002 standins >/dev/null
docker build -q -t tenant/blog:1 --build-arg NAME=blog --build-arg PORT=9000 standins >/dev/null
(cd /opt/whisper-faster && docker compose up -d --quiet-pull 2>/dev/null || docker compose up -d)
# whisperx: built, tried once, stopped ("l'auto-start prendra le relai")
(cd /opt/whisperx && docker compose up -d --no-build && docker compose stop)

systemctl daemon-reload
systemctl enable --now docker-autostart
for _ in $(seq 1 30); do curl -s -o /dev/null http://127.0.0.1:8890/ && break; sleep 1; done
echo "brownfield seed: done"
