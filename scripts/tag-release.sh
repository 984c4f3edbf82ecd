#!/usr/bin/env bash
# Tags images already in ECR with TAG, moving the tag from whichever image held it: each stage's
# `terraform apply` runs it (terraform/stages/*/main.tf) to mark the images it runs as
# release-<stage>, which the registry's lifecycle policy never expires.
#
# Usage: scripts/tag-release.sh TAG REPOSITORY@DIGEST...
# Needs the AWS CLI with ecr:DescribeImages, ecr:BatchGetImage and ecr:PutImage on the
# repositories (AWS_PROFILE and AWS_REGION as usual). Retags as AWS documents it: the image's
# manifest is put again under the new tag, which copies nothing.
set -euo pipefail

if [ $# -lt 2 ]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
fi
tag="$1"
shift
case "$tag" in
    *[!A-Za-z0-9._-]* | '') echo "tag-release.sh: invalid tag '$tag'" >&2; exit 2 ;;
esac

for image in "$@"; do
    repository="${image%@*}"
    digest="${image#*@}"
    case "$digest" in
        sha256:*) ;;
        *) echo "tag-release.sh: '$image' is not REPOSITORY@sha256:DIGEST" >&2; exit 2 ;;
    esac
    current="$(aws ecr describe-images --repository-name "$repository" --image-ids imageTag="$tag" \
        --query 'imageDetails[0].imageDigest' --output text 2>/dev/null || true)"
    if [ "$current" = "$digest" ]; then
        echo "tag-release.sh: $repository:$tag is already $digest"
        continue
    fi
    manifest="$(aws ecr batch-get-image --repository-name "$repository" --image-ids imageDigest="$digest" \
        --query 'images[0].imageManifest' --output text)"
    media_type="$(aws ecr batch-get-image --repository-name "$repository" --image-ids imageDigest="$digest" \
        --query 'images[0].imageManifestMediaType' --output text)"
    aws ecr put-image --repository-name "$repository" --image-tag "$tag" \
        --image-manifest "$manifest" --image-manifest-media-type "$media_type" >/dev/null
    echo "tag-release.sh: $repository:$tag -> $digest"
done
