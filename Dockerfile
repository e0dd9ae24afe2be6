# One image for every healthbus role: `docker run healthbus aggregator|web|serve|probe|…`;
# the probes extra (httpx, psycopg) lets it watch HTTP and PostgreSQL targets too.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY healthbus healthbus
COPY publishers publishers
COPY aggregator aggregator
RUN pip install --no-cache-dir '.[probes]' && useradd --system --no-create-home healthbus
USER healthbus
ENTRYPOINT ["healthbus"]
CMD ["--help"]
