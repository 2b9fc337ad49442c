#!/usr/bin/env bash
# After a fine-tune folder was copied to the host: checks every file of the copy against the manifest
# made from the source (size, then sha256) and only then moves it into MODEL_DIR with one rename, so the
# containers never mount a damaged or half-written model. A copy that does not match is removed and the
# deploy fails with the files that differ. Run by components/vllm_server.py after the copy.
#
# Parameters (environment):
#   STAGED_COPY  where the copy landed (<staging folder>/<source folder name>)
#   MODEL_DIR    where the containers find the model
#   DIGEST       the source's content digest, recorded in MODEL_DIR once verified
#   COPY_URN     the copy's resource, which `pulumi up --replace` re-runs
# stdin: the manifest, one "<size>\t<sha256>\t<relative path>" line per file
set -euo pipefail
: "${STAGED_COPY:?is not set}" "${MODEL_DIR:?is not set}" "${DIGEST:?is not set}" "${COPY_URN:?is not set}"

marker="$MODEL_DIR/.vllm-endpoint-verified"
staging=$(dirname -- "$STAGED_COPY")
manifest=$(cat)
if [[ ! -d $STAGED_COPY ]]; then
  if [[ -f $marker && $(<"$marker") == "$DIGEST" ]]; then
    echo "model already verified in $MODEL_DIR"
    exit 0
  fi
  echo "the upload is not in $STAGED_COPY: copy it again with \`pulumi up --replace '$COPY_URN'\`" >&2
  exit 1
fi

bad=() files=0 bytes=0
while IFS=$'\t' read -r size sha path; do
  [[ -n $path ]] || continue
  file="$STAGED_COPY/$path"
  files=$((files + 1)) bytes=$((bytes + size))
  if [[ ! -f $file ]]; then
    bad+=("$path: missing")
  elif [[ $(stat -c %s -- "$file") != "$size" ]]; then
    bad+=("$path: $(stat -c %s -- "$file") bytes, the source has $size")
  elif [[ $(sha256sum -- "$file" | cut -d' ' -f1) != "$sha" ]]; then
    bad+=("$path: its content differs from the source (sha256)")
  fi
done <<<"$manifest"
if ((${#bad[@]})); then
  rm -rf -- "$staging"
  echo "the upload to $STAGED_COPY differs from modelPath in ${#bad[@]} of $files file(s); it was removed:" >&2
  printf '  %s\n' "${bad[@]:0:10}" >&2
  echo "copy it again with \`pulumi up --replace '$COPY_URN'\`" >&2
  exit 1
fi
echo "$DIGEST" >"$STAGED_COPY/.vllm-endpoint-verified"
chmod -R a+rX,go-w -- "$STAGED_COPY"
rm -rf -- "$MODEL_DIR"
mv -T -- "$STAGED_COPY" "$MODEL_DIR"
rm -rf -- "$staging"
echo "model verified ($files files, $bytes bytes) and in place in $MODEL_DIR"
