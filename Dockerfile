# One image for every taskq process type (web, worker, simulator).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir .
ENV PYTHONUNBUFFERED=1
EXPOSE 8000
CMD ["taskq", "serve", "--host", "0.0.0.0", "--port", "8000"]
