# stoker's container image: a static-enough release build on Debian, run from distroless as a
# non-root user. Build: docker build -t stoker:dev .  (see docs/install.md)
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake clang && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY examples ./examples
RUN cargo build --release --locked --bin stoker && strip target/release/stoker

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/stoker /usr/local/bin/stoker
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/stoker"]
CMD ["controller"]
