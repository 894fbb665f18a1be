// The official openai npm package streams a chat completion from moed over its Unix
// socket: undici's Agent connects to the socket, the SDK sees an ordinary base URL.
// Usage: node chat_stream.mjs SOCKET. Prints one JSON line {content, chunks, finish, models}.
import OpenAI from "openai";
import { Agent } from "undici";

const socketPath = process.argv[2];
const client = new OpenAI({
  apiKey: "unused",
  baseURL: "http://localhost/v1",
  fetchOptions: { dispatcher: new Agent({ connect: { socketPath } }) },
  maxRetries: 0,
});

const models = await client.models.list();
const stream = await client.chat.completions.create({
  model: models.data[0].id,
  messages: [{ role: "user", content: "Say hello." }],
  max_tokens: 8,
  temperature: 0,
  stream: true,
  stream_options: { include_usage: true },
});
let content = "", chunks = 0, finish = null, usage = null;
for await (const chunk of stream) {
  chunks++;
  if (chunk.usage) usage = chunk.usage;
  for (const c of chunk.choices) {
    content += c.delta?.content ?? "";
    if (c.finish_reason) finish = c.finish_reason;
  }
}
let status = null;
try {
  await client.chat.completions.create({ model: "x", messages: [] });
} catch (e) {
  status = e.status;
}
console.log(JSON.stringify({ content, chunks, finish, usage, models: models.data.map((m) => m.id), error_status: status }));
