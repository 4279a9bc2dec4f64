// The openai npm SDK against a gateway's Responses API: `node responses_node.js BASE_URL MODEL`.
// Prints one JSON line: a text answer, a two-turn function tool exchange, and a stream's events.
const OpenAI = require("openai");

async function main() {
  const [baseURL, model] = process.argv.slice(2);
  const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0 });
  const text = await client.responses.create({ model, input: "Hello from Node" });
  const tools = [{ type: "function", name: "get_weather", description: "Weather",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } }];
  const asked = await client.responses.create({ model, input: "Weather?", tools });
  const call = asked.output.find((o) => o.type === "function_call");
  const answered = await client.responses.create({ model, tools, previous_response_id: asked.id,
    input: [{ type: "function_call_output", call_id: call.call_id, output: "22C" }] });
  const events = [];
  const stream = await client.responses.create({ model, input: "Stream it", stream: true });
  let final = null;
  for await (const event of stream) {
    events.push(event.type);
    if (event.type === "response.completed") final = event.response;
  }
  console.log(JSON.stringify({ text: text.output_text, call: call.name, args: call.arguments,
    answered: answered.output_text, events, streamed: final.output[0].content[0].text }));
}

main().catch((err) => { console.error(err); process.exit(1); });
