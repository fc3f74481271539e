# The collapsewatch server (no torch: training environments install the SDK alone).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY client_sdk client_sdk
COPY server server
COPY web web
RUN pip install --no-cache-dir ".[server]"
ENV COLLAPSEWATCH_HOST=0.0.0.0 COLLAPSEWATCH_PORT=8420
EXPOSE 8420
HEALTHCHECK CMD python -c "import httpx,sys; sys.exit(httpx.get('http://127.0.0.1:8420/healthz').status_code != 200)"
CMD ["collapsewatch", "serve"]
