// The Streamlit custom-component protocol (API version 1) without streamlit-component-lib: the parent
// page posts "streamlit:render" with the arguments; the component answers with its height and value.

function send(type, data) {
  window.parent.postMessage({ isStreamlitMessage: true, type, ...data }, "*");
}

export function onRender(callback) {
  window.addEventListener("message", (event) => {
    if (event.data && event.data.type === "streamlit:render") callback(event.data.args, event.data.disabled);
  });
  send("streamlit:componentReady", { apiVersion: 1 });
}

export function setFrameHeight(height) {
  send("streamlit:setFrameHeight", { height });
}

export function setValue(value) {
  send("streamlit:setComponentValue", { value, dataType: "json" });
}
