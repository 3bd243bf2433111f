# chatdebug-proxy: the recording sidecar, on its embedded SQLite (or a shared PostgreSQL:
# CHATDEBUG_DATABASE=postgresql://...).
FROM python:3.12-slim

# PYTHONOPTIMIZE skips mitmproxy's per-message debug type checks (about 5 % of its CPU).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONOPTIMIZE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY addons ./addons
COPY storage ./storage
# /ca is where compose's publish-ca puts the CA certificate for clients: a volume of its own,
# so no client mounts /data (the database, the spool, the CA's key).
RUN pip install . \
 && useradd --system --uid 10001 --home-dir /data --create-home chatdebug \
 && install -d -o chatdebug -g chatdebug -m 0755 /ca \
 && install -d -o chatdebug -g chatdebug -m 0700 /data/conf

USER chatdebug
# /data holds the database and spool (0600); /data/conf the CA (its key 0600, ca.pem public).
VOLUME ["/data"]
ENV CHATDEBUG_PROXY_ADDR=0.0.0.0:8080 \
    CHATDEBUG_API_ADDR=0.0.0.0:8081 \
    CHATDEBUG_DATABASE=sqlite:////data/chatdebug.db \
    CHATDEBUG_CONFDIR=/data/conf
EXPOSE 8080 8081

HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/healthz', timeout=2)"]

# The API listens beyond loopback here: set CHATDEBUG_API_TOKEN (or CHATDEBUG_API_ALLOW_ANONYMOUS=1).
ENTRYPOINT ["chatdebug"]
CMD ["run"]
