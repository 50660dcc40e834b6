#!/bin/sh
# Host hooks that tie `skaffold dev|run` to Kubeflow Pipelines (wired in skaffold.yaml).
#
#   compile  after each build of the component image. Skaffold exports the image it built as SKAFFOLD_IMAGE to
#            build hooks only (deploy hooks get no image), so the pipeline is compiled here, against that image,
#            into $DIST_DIR/tabular_training.yaml; $DIST_DIR/component-image.txt records the reference.
#   compile-from BUILD_JSON
#            the same, with the image named in the file that `skaffold build --file-output=BUILD_JSON` wrote:
#            there a pushed image is <repo>:<tag>@sha256:<registry digest>, so the pipeline is pinned by digest
#            without asking the registry. Build hooks run before Skaffold writes that file, so this runs after
#            `skaffold build`, e.g. in CI (README, "Skaffold").
#   submit   after each deploy. Submits a run with that image when KFP_HOST is set (KFP_NAMESPACE: the
#            profile), otherwise says how to.
#
# DIST_DIR defaults to dist/ at the repository root. KFP_TABULAR_CLI defaults to the project venv's
# kfp-tabular when there is one, else to the one on PATH.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
dist=${DIST_DIR:-$root/dist}
if [ -n "${KFP_TABULAR_CLI:-}" ]; then
    cli=$KFP_TABULAR_CLI
elif [ -x "$root/.venv/bin/kfp-tabular" ]; then
    cli=$root/.venv/bin/kfp-tabular
else
    cli=kfp-tabular
fi

# SKAFFOLD_IMAGE is repo:tag. Once an image is pushed its registry digest is known, and repo@sha256:... is the
# reference that cannot drift; an image that only exists locally (push: false, kind/minikube) keeps its tag,
# which inputDigest derives from the build inputs.
pinned() {
    image=$1
    repo=${image%:*}
    if [ "${SKAFFOLD_PUSH_IMAGE:-false}" = true ]; then
        digest=
        if command -v crane >/dev/null 2>&1; then
            digest=$(crane digest "$image" 2>/dev/null || true)
        elif command -v docker >/dev/null 2>&1; then
            digest=$(docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$image" 2>/dev/null \
                | sed -n "s|^$repo@||p" | head -n 1 || true)
        fi
        case $digest in
            sha256:*) echo "$repo@$digest"; return ;;
            *) echo "skaffold-hook: could not resolve the digest of $image; compiling with its tag" >&2 ;;
        esac
    fi
    echo "$image"
}

compile_with() {
    mkdir -p "$dist"
    "$cli" compile --image "$1" --output "$dist/tabular_training.yaml"
    printf '%s\n' "$1" > "$dist/component-image.txt"
    echo "skaffold-hook: compiled $dist/tabular_training.yaml with $1"
}

case ${1:-} in
    compile)
        : "${SKAFFOLD_IMAGE:?is set by Skaffold for build hooks; run this through skaffold build|dev|run}"
        compile_with "$(pinned "$SKAFFOLD_IMAGE")"
        ;;
    compile-from)
        if [ $# -ne 2 ]; then
            echo "usage: $0 compile-from <file written by skaffold build --file-output>" >&2
            exit 2
        fi
        # The CLI reads Skaffold's JSON (and fails, naming the file, when it holds no kfp-tabular build).
        image=$("$cli" compile --build-output "$2" --print-image)
        compile_with "$image"
        ;;
    submit)
        if [ -z "${KFP_HOST:-}" ]; then
            echo "skaffold-hook: KFP_HOST is not set, not submitting. Upload $dist/tabular_training.yaml from the"
            echo "skaffold-hook: Kubeflow dashboard, or set KFP_HOST=<pipelines API URL> to submit a run."
            exit 0
        fi
        if [ ! -s "$dist/component-image.txt" ]; then
            echo "skaffold-hook: no $dist/component-image.txt: the build hook did not run (image found in the" >&2
            echo "skaffold-hook: Skaffold cache?). Rerun with --cache-artifacts=false to rebuild and recompile." >&2
            exit 1
        fi
        # KFP_NAMESPACE: the Kubeflow profile to run in (multi-user installs).
        "$cli" submit --host "$KFP_HOST" --image "$(cat "$dist/component-image.txt")" \
            --output "$dist/tabular_training.yaml" ${KFP_NAMESPACE:+--namespace "$KFP_NAMESPACE"}
        ;;
    *)
        echo "usage: $0 compile|compile-from <build.json>|submit" >&2
        exit 2
        ;;
esac
