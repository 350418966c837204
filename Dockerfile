# replicant: one static binary, one image. The manager Deployment runs it, and the
# replicant-install init container copies it into every database pod.
# (No Docker engine on the development machines: the binary this builds is the one
# `make build` builds and the tests run.)
FROM golang:1.24-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/replicant ./cmd/replicant

# Static binary, no shell: distroless static, running as its non-root user.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/replicant /usr/local/bin/replicant
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/replicant"]
