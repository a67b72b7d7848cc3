import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { endpointFromPage } from '../endpoint';
import { TOPICS, isTopic, type Topic } from '../frames';
import { App } from './App';
import './styles.css';

/** `?topics=a,b` (or `none`) picks the topics; by default all seven on /ws/connect, none extra elsewhere. */
function initialTopics(search: string, endpoint: string): Topic[] {
  const asked = new URLSearchParams(search).get('topics');
  if (asked !== null) return asked.split(',').map((t) => t.trim()).filter(isTopic);
  return new URL(endpoint.replace(/^ws/, 'http')).pathname === '/ws/connect' ? [...TOPICS] : [];
}

const endpoint = endpointFromPage(window.location);
const root = document.getElementById('root');
if (root) {
  createRoot(root).render(
    <StrictMode>
      <App endpoint={endpoint} initialTopics={initialTopics(window.location.search, endpoint)} />
    </StrictMode>,
  );
}
