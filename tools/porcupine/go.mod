module github.com/shakedown-dev/shakedown/tools/porcupine

go 1.26.0

require github.com/anishathalye/porcupine v1.3.1
