// The microphone, as PCM16 mono at 24 kHz (the Realtime protocol's rate), posted in ~100 ms chunks.
// The AudioContext is asked for 24 kHz; a browser that runs it at another rate gets linear resampling here.
const OUT_RATE = 24000;
const CHUNK = OUT_RATE / 10;

class Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / OUT_RATE; // input samples per output sample
    this.pos = 0; // where the next output sample falls, in input samples from the start of `this.last`'s block
    this.last = 0; // the previous block's final sample, for interpolating across block edges
    this.out = new Int16Array(CHUNK);
    this.n = 0;
    this.muted = false;
    this.port.onmessage = (e) => {
      if (e.data && typeof e.data.muted === "boolean") this.muted = e.data.muted;
    };
  }

  push(x) {
    const s = Math.max(-1, Math.min(1, x));
    this.out[this.n++] = s < 0 ? s * 0x8000 : s * 0x7fff;
    if (this.n === CHUNK) {
      this.port.postMessage(this.out.buffer, [this.out.buffer]);
      this.out = new Int16Array(CHUNK);
      this.n = 0;
    }
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0 || this.muted) return true;
    const ch = input[0]; // mono: the stream was asked for one channel
    if (this.step === 1) {
      for (let i = 0; i < ch.length; i++) this.push(ch[i]);
      return true;
    }
    // Sample k of this block sits at position k + 1 (position 0 is the previous block's last sample).
    while (this.pos <= ch.length) {
      const i = Math.floor(this.pos);
      const frac = this.pos - i;
      const a = i === 0 ? this.last : ch[i - 1];
      const b = i < ch.length ? ch[i] : a;
      this.push(a + (b - a) * frac);
      this.pos += this.step;
    }
    this.pos -= ch.length;
    this.last = ch[ch.length - 1];
    return true;
  }
}

registerProcessor("medvoice-capture", Capture);
